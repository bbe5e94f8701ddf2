// Package client holds the operations users perform through calicoctl and
// the Docker plugins. Each one validates everything first, then writes, and
// undoes its own partial work on failure, so a bad request leaves nothing behind.
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/ipam"
)

// Client performs operations against one datastore.
type Client struct {
	DS   *datastore.Client
	IPAM *ipam.IPAM
}

// New wraps a connected datastore client.
func New(ds *datastore.Client) *Client {
	return &Client{DS: ds, IPAM: ipam.New(ds)}
}

// Connect reads the datastore settings (flag, then environment) and connects.
func Connect(ctx context.Context, endpointsFlag string) (*Client, error) {
	ds, err := datastore.Connect(ctx, datastore.ConfigFromEnv(endpointsFlag))
	if err != nil {
		return nil, err
	}
	return New(ds), nil
}

// Close releases the connection.
func (c *Client) Close() { c.DS.Close() }

// ThisNode decides which host "this host" is: CALICO_NODENAME, else a
// registered node whose address is on one of this network namespace's
// interfaces (so hosts made of namespaces on one machine tell themselves
// apart), else the host name.
func (c *Client) ThisNode(ctx context.Context) (string, error) {
	if n := os.Getenv("CALICO_NODENAME"); n != "" {
		return n, nil
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		local := map[netip.Addr]bool{}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				local[p.Addr()] = true
			}
		}
		nodes, err := c.nodeRecords(ctx)
		if err != nil {
			return "", err
		}
		for _, n := range nodes {
			if p, err := netip.ParsePrefix(n.IPv4); err == nil && local[p.Addr()] {
				return n.Name, nil
			}
		}
	}
	return os.Hostname()
}

// notFound turns a datastore miss into a message that says what to do; it
// still matches datastore.ErrNotFound, so callers can tell a miss from a
// datastore that did not answer.
func notFound(err error, format string, args ...any) error {
	if errors.Is(err, datastore.ErrNotFound) {
		return missing(fmt.Sprintf(format, args...))
	}
	return err
}

type missing string

func (m missing) Error() string { return string(m) }
func (m missing) Unwrap() error { return datastore.ErrNotFound }
