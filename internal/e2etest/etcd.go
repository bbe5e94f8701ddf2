package e2etest

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/calico-go/calico/internal/lab"
)

// EtcdFrom is an etcd client (closed when the test ends) whose connections
// start in h's namespace: the lab's datastore is reachable only on its
// fabric. Tests use it to write records no calicoctl command writes yet.
func EtcdFrom(t testing.TB, h *lab.Host, hostPort string) *clientv3.Client {
	t.Helper()
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		if i := strings.LastIndex(addr, "://"); i >= 0 {
			addr = addr[i+3:]
		}
		var c net.Conn
		err := h.Do(func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"http://" + hostPort},
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)},
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
