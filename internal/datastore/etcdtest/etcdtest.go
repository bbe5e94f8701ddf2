// Package etcdtest starts a real embedded etcd for tests.
package etcdtest

import (
	"fmt"
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-go/calico/internal/datastore/etcdserver"
)

// FreePort returns a currently unused TCP port on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs an etcd member on 127.0.0.1 for the life of the test and returns
// its client URL. It is stopped in t.Cleanup (register client Close after
// calling Start so clients close first).
func Start(t testing.TB) string {
	t.Helper()
	cport, pport := FreePort(t), FreePort(t)
	s, err := etcdserver.Start(etcdserver.Config{
		DataDir:    t.TempDir(),
		ClientAddr: fmt.Sprintf("127.0.0.1:%d", cport),
		PeerAddr:   fmt.Sprintf("127.0.0.1:%d", pport),
	}, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s.ClientURL
}

// Client starts etcd and returns a client to it, closed before the server.
func Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return Dial(t, Start(t))
}

// Dial returns a raw etcd client to url, for tests that must do what the
// datastore client never does (write an empty value, compact the history,
// inspect keys), closed in t.Cleanup.
func Dial(t testing.TB, url string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
