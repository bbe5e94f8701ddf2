package fastpath

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/e2etest"
)

// TestFastPathHalfClosed: once one side of a connection has sent its FIN
// (the normal way), conntrack holds the entry in a closing state with a
// timeout of seconds to minutes. The other side's remaining data must go
// the normal way too: carried by the fast path, it kept the entry alive
// past the close and now and then set its timeout back to the established
// one (five days by default), a pinhole that outlived its connection. The
// data still arrives, whole.
func TestFastPathHalfClosed(t *testing.T) {
	fw := newWorld(t, []wlSpec{{"fp-a1", 0, "192.168.100.1", true}, {"fp-b1", 1, "192.168.100.65", true}})
	ctx := e2etest.Ctx(t, 2*time.Minute)
	h1, h2 := fw.hosts[0], fw.hosts[1]
	a1, b1 := fw.wls["fp-a1"], fw.wls["fp-b1"]
	fw.set(t, true)

	var ln net.Listener
	if err := a1.Netns.Do(func() (err error) { ln, err = net.Listen("tcp4", fmt.Sprintf("%s:7200", a1.IP)); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		c.(*net.TCPConn).CloseWrite() // the server's FIN, at once
		b, _ := io.ReadAll(c)
		got <- b
	}()
	var c net.Conn
	if err := b1.Netns.Do(func() (err error) {
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err = d.DialContext(ctx, "tcp4", fmt.Sprintf("%s:7200", a1.IP))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("waiting for the server's FIN: %d, %v", n, err)
	}
	// The connection is half closed: what b1 sends now is data of a flow
	// conntrack no longer holds as ESTABLISHED.
	s1, s2 := h1.m.Stats(), h2.m.Stats()
	want := bytes.Repeat([]byte("half-closed "), 1<<18) // 3 MB
	for off := 0; off < len(want); off += 64 << 10 {
		if _, err := c.Write(want[off:min(off+64<<10, len(want))]); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond) // the last segments and their ACKs
	d1, d2 := delta(s1, h1.m.Stats()), delta(s2, h2.m.Stats())
	c.(*net.TCPConn).CloseWrite()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("a1 got %d bytes after its FIN, want the %d b1 sent", len(b), len(want))
	}
	t.Logf("half-closed phase: host1 %v, host2 %v", d1, d2)
	for _, d := range []map[string]uint64{d1, d2} {
		if fwd := d["fwd_workload"] + d["fwd_uplink"] + d["fwd_tunnel"]; fwd > 0 {
			t.Errorf("%d segments of a half-closed flow took the fast path: host1 %v, host2 %v", fwd, d1, d2)
		}
	}
	if d1["pass_ct_state"] == 0 || d2["pass_ct_state"] == 0 {
		t.Errorf("the half-closed flow's segments were not turned away for their conntrack state: host1 %v, host2 %v", d1, d2)
	}
}
