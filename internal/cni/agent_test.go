package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/calico-go/calico/internal/cniagent"
	"github.com/calico-go/calico/internal/datastore"
)

// The CNI socket is a trust boundary both ways: the agent serves root
// alone, the plugin talks to a root agent alone, and every field of a
// request is checked again by the agent. These tests perform each attack
// with a server that has no datastore: a call that passes every check is
// answered "elsewhere" (its conflist names another datastore), one that
// fails a check gets a CNI error, and neither reaches a datastore.

// nobody is the uid and gid the attacker processes drop to.
const nobody = 65534

// helperEnv makes the test binary an attacker process (TestHelperProcess).
const helperEnv = "CALICO_CNI_TEST_HELPER"

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (peer credentials of root and of nobody)")
	}
}

func testSocket(t testing.TB, what string) string {
	return fmt.Sprintf("@calico-test/%s-%d-%d", what, os.Getpid(), time.Now().UnixNano())
}

// serve runs a Server for node "n1" on datastore http://192.0.2.1:2379 at
// a fresh socket until the test ends.
func serve(t testing.TB) string {
	t.Helper()
	sock := testSocket(t, "agent")
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Node: "n1", Datastore: datastore.ConfigFrom("http://192.0.2.1:2379", func(string) string { return "" }), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, sock) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	for i := 0; ; i++ { // listening?
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return sock
		}
		if i == 100 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// honest is a well-formed ADD whose conflist names another datastore.
func honest() *cniagent.Request {
	return &cniagent.Request{
		Command: "ADD", ContainerID: "c1", Netns: "/run/netns/c1", IfName: "eth0", Args: "IgnoreUnknown=1",
		Stdin: []byte(`{"cniVersion":"1.1.0","name":"net1","type":"calico","etcd_endpoints":"http://198.51.100.1:2379","ipam":{"type":"calico-ipam"}}`),
		Env:   map[string]string{"ETCD_AUTHORITY": "198.51.100.1:2379"},
	}
}

// asNobody runs the test binary as an attacker process doing what, and
// returns its output.
func asNobody(t *testing.T, what, sock string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+what, "CALICO_CNI_SOCKET="+sock)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("attacker %s: %v\n%s", what, err, out)
	}
	return string(out)
}

// TestHelperProcess is the attacker: it drops to nobody, then either
// calls the agent (call) or binds the socket and reports what a plugin
// sent it (squat).
func TestHelperProcess(t *testing.T) {
	what := os.Getenv(helperEnv)
	if what == "" {
		t.Skip("helper process only")
	}
	if err := syscall.Setgid(nobody); err != nil {
		fmt.Println("setgid:", err)
		return
	}
	if err := syscall.Setuid(nobody); err != nil {
		fmt.Println("setuid:", err)
		return
	}
	sock := cniagent.Socket()
	switch what {
	case "call":
		// Straight to the wire: the attacker does not check the agent.
		c, err := net.Dial("unix", sock)
		if err != nil {
			fmt.Println("RESULT dial:", err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		json.NewEncoder(c).Encode(honest())
		c.(*net.UnixConn).CloseWrite()
		b, _ := io.ReadAll(c)
		fmt.Printf("RESULT answer %q\n", b)
	case "squat":
		l, err := net.Listen("unix", sock)
		if err != nil {
			fmt.Println("RESULT listen:", err)
			return
		}
		fmt.Println("LISTENING")
		os.Stdout.Sync()
		l.(*net.UnixListener).SetDeadline(time.Now().Add(10 * time.Second))
		c, err := l.Accept()
		if err != nil {
			fmt.Println("RESULT accept:", err)
			return
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		b, _ := io.ReadAll(c)
		fmt.Printf("RESULT received %d bytes\n", len(b))
	}
}

// TestAgentServesRootOnly: a caller that is not root gets not a byte,
// while root's call of the same request is answered.
func TestAgentServesRootOnly(t *testing.T) {
	needRoot(t)
	sock := serve(t)
	out := asNobody(t, "call", sock)
	if !strings.Contains(out, `RESULT answer ""`) {
		t.Errorf("a caller running as nobody got: %s", out)
	}
	rep, err := cniagent.Call(sock, honest(), 10*time.Second)
	if err != nil || rep.Elsewhere == "" {
		t.Fatalf("root's call: %+v, %v; want an answer (elsewhere)", rep, err)
	}
}

// TestPluginRefusesSquatter: a socket bound by nobody is no agent: the
// plugin sends it nothing and does the work itself (ErrNoAgent).
func TestPluginRefusesSquatter(t *testing.T) {
	needRoot(t)
	sock := testSocket(t, "squat")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"=squat", "CALICO_CNI_SOCKET="+sock)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, _ := stdout.Read(buf) // LISTENING
	if !strings.Contains(string(buf[:n]), "LISTENING") {
		t.Fatalf("squatter: %s", buf[:n])
	}
	_, err = cniagent.Call(sock, honest(), 5*time.Second)
	if !errors.Is(err, cniagent.ErrNoAgent) {
		t.Errorf("call to a socket nobody bound: %v, want ErrNoAgent", err)
	}
	rest, _ := io.ReadAll(stdout)
	cmd.Wait()
	if out := string(buf[:n]) + string(rest); !strings.Contains(out, "RESULT received 0 bytes") {
		t.Errorf("the squatter: %s", out)
	}
	// Honest traffic: the plugin does talk to a root agent.
	if rep, err := cniagent.Call(serve(t), honest(), 10*time.Second); err != nil || rep.Elsewhere == "" {
		t.Errorf("call to a root agent: %+v, %v", rep, err)
	}
}

// TestAgentChecksEveryField: requests skel would have refused in the
// plugin, sent straight to the socket, get a CNI error naming the field,
// each next to the honest request they differ from by one field.
func TestAgentChecksEveryField(t *testing.T) {
	needRoot(t)
	sock := serve(t)
	long := strings.Repeat("a", cniagent.MaxField+1)
	cases := map[string]func(r *cniagent.Request){
		"unknown command":       func(r *cniagent.Request) { r.Command = "GC" },
		"container id path":     func(r *cniagent.Request) { r.ContainerID = "../../etc" },
		"container id too long": func(r *cniagent.Request) { r.ContainerID = long },
		"interface with slash":  func(r *cniagent.Request) { r.IfName = "../eth0" },
		"interface too long":    func(r *cniagent.Request) { r.IfName = "eth0123456789abcdef" },
		"relative netns":        func(r *cniagent.Request) { r.Netns = "run/netns/c1" },
		"netns with dots":       func(r *cniagent.Request) { r.Netns = "/run/netns/../../etc/passwd" },
		"no netns on ADD":       func(r *cniagent.Request) { r.Netns = "" },
		"CNI_ARGS not text":     func(r *cniagent.Request) { r.Args = "a=\x00b" },
		"foreign env":           func(r *cniagent.Request) { r.Env["LD_PRELOAD"] = "/tmp/x.so" },
		"bad conflist": func(r *cniagent.Request) {
			r.Stdin = []byte(`{"cniVersion":"1.1.0","name":"net1","ipam":{"type":"host-local"}}`)
		},
		"conflist not JSON": func(r *cniagent.Request) { r.Stdin = []byte(`{`) },
	}
	for name, mutate := range cases {
		r := honest()
		mutate(r)
		rep, err := cniagent.Call(sock, r, 10*time.Second)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		te := &types.Error{}
		if rep.Elsewhere != "" || json.Unmarshal(rep.Error, te) != nil || te.Code == 0 {
			t.Errorf("%s: answered %+v, want a CNI error", name, rep)
		}
	}
	// An oversized request: refused without reading it all.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		r := honest()
		r.Stdin = []byte(`"` + strings.Repeat("x", 2*cniagent.MaxMessage) + `"`)
		json.NewEncoder(c).Encode(r)
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var rep cniagent.Reply
	if err := json.NewDecoder(c).Decode(&rep); err != nil || len(rep.Error) == 0 {
		t.Errorf("oversized request: %+v, %v; want a CNI error", rep, err)
	}
	// DEL of a gone namespace is honest (the spec allows it).
	r := honest()
	r.Command, r.Netns = "DEL", ""
	if rep, err := cniagent.Call(sock, r, 10*time.Second); err != nil || rep.Elsewhere == "" {
		t.Errorf("DEL without netns: %+v, %v; want elsewhere", rep, err)
	}
	// The agent's own datastore, another node: not its call either.
	r = honest()
	r.Stdin = []byte(`{"cniVersion":"1.1.0","name":"net1","type":"calico","etcd_endpoints":"http://192.0.2.1:2379","nodename":"n2","ipam":{"type":"calico-ipam"}}`)
	if rep, err := cniagent.Call(sock, r, 10*time.Second); err != nil || !strings.Contains(rep.Elsewhere, "n2") {
		t.Errorf("a call for node n2: %+v, %v; want elsewhere naming n2", rep, err)
	}
}

// BenchmarkAgentCall is the wire's own cost per call: connect, both
// credential checks, the request checked and answered (elsewhere: no
// datastore here).
func BenchmarkAgentCall(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	sock := serve(b)
	req := honest()
	b.ReportAllocs()
	for b.Loop() {
		if rep, err := cniagent.Call(sock, req, 10*time.Second); err != nil || rep.Elsewhere == "" {
			b.Fatal(rep, err)
		}
	}
}
