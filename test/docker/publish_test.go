package docker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/calico-go/calico/internal/docker/dockertest"
	"github.com/calico-go/calico/internal/e2etest"
)

// TestDockerPublish: `docker run -p` on a calico network. Before, the
// driver's ProgramExternalConnectivity did nothing: -p 8080:80 was
// silently ignored and nothing answered on the host. Now host 1's agent
// DNATs the host's addresses (or the --publish address) to the workload in
// table inet calico, from other hosts and from the host itself, TCP and
// UDP, and removes it with the endpoint.
func TestDockerPublish(t *testing.T) {
	dw := newDockerWorld(t)
	h1, h2 := dw.Host("host1"), dw.Host("host2")
	host1IP := h1.Addr().String()
	netP := dw.name("netP")
	dw.docker(t, "host1", "network", "create", "--driver=calico", "--ipam-driver=calico-ipam", "--subnet=192.168.22.0/24", netP)
	web := dw.name("web")
	dw.docker(t, "host1", "run", "--net", netP, "--name", web,
		"-p", "8080:80", "-p", host1IP+":5353:53/udp", "-d", dockertest.DefaultImage,
		"sh", "-c", "mkdir -p /www && echo hello-calico > /www/index.html && exec httpd -f -p 80 -h /www")
	webIP := dw.ipOn(t, "host1", web, netP)
	t.Logf("docker port %s: %q (the engine shows remote drivers' bindings only if they come back typed, which JSON cannot do)", web, dw.docker(t, "host1", "port", web))

	curl := func(nsPath, url string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "nsenter", "--net="+nsPath, "--", "curl", "-s", "-m", "2", url).CombinedOutput()
		return string(out), err
	}
	reaches := func(nsPath, url string) error {
		out, err := curl(nsPath, url)
		if err != nil || !strings.Contains(out, "hello-calico") {
			return errString("curl " + url + ": " + strings.TrimSpace(out))
		}
		return nil
	}
	url := "http://" + host1IP + ":8080/"
	t.Run("tcp: another host and the host itself reach the published port", func(t *testing.T) {
		waitFor(t, 20*time.Second, "curl from host2", func() error { return reaches(h2.Path, url) })
		waitFor(t, 10*time.Second, "curl from host1", func() error { return reaches(h1.Path, url) })
	})
	t.Run("the workload's address stays closed to non-members", func(t *testing.T) {
		if out, err := curl(h2.Path, "http://"+webIP+":80/"); err == nil {
			t.Errorf("host2 reaches %s:80 directly, past the network's profile: %s", webIP, out)
		}
	})
	t.Run("udp on the --publish address", func(t *testing.T) {
		dst := netip.MustParseAddrPort(host1IP + ":5353")
		got := listenUDPIn(t, fmt.Sprintf("/proc/%d/ns/net", dw.pid(t, "host1", web)), ":53")
		waitFor(t, 20*time.Second, "datagram in the container", func() error {
			if err := e2etest.SendUDP(h2.Netns, netip.AddrPort{}, dst, "ping-calico", 1); err != nil {
				return err
			}
			select {
			case p := <-got:
				if p != "ping-calico" {
					return errString("got " + p)
				}
				return nil
			case <-time.After(time.Second):
				return errString("nothing arrived")
			}
		})
	})
	t.Run("removed with the endpoint", func(t *testing.T) {
		dw.docker(t, "host1", "rm", "-f", web)
		waitFor(t, 20*time.Second, "the published port closed", func() error {
			if err := reaches(h2.Path, url); err == nil {
				return errString("still answers")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, err := h1.Run(ctx, "nft", "list", "chain", "inet", "calico", "publish")
			if err != nil || strings.Contains(out, "dnat") {
				return errString("publish chain: " + out)
			}
			return nil
		})
	})
}

// listenUDPIn listens on addr (udp4) inside the namespace at nsPath until
// the test ends, and passes on each datagram's payload.
func listenUDPIn(t *testing.T, nsPath, addr string) <-chan string {
	t.Helper()
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	type res struct {
		c   net.PacketConn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// Back to our namespace before the thread is unlocked. A thread
		// must never exit locked here: a child started from it (the second
		// dockerd, with a parent-death signal) would die with it.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: err}
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: err}
			return
		}
		c, err := net.ListenPacket("udp4", addr)
		if serr := netns.Set(orig); serr != nil {
			// Stuck in the container's namespace: keep the thread locked
			// and this goroutine alive, so the thread never serves others.
			ch <- res{c, err}
			select {}
		}
		runtime.UnlockOSThread()
		ch <- res{c, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen %s in %s: %v", addr, nsPath, r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	out := make(chan string, 16)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := r.c.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case out <- string(buf[:n]):
			default:
			}
		}
	}()
	return out
}
