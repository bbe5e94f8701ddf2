// Package ui tests `calicoctl ui` in a real browser: headless Chromium,
// driven over the DevTools protocol (chromedp), loads the page served on a
// lab host and watches it follow the datastore.
package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

const prefix = "cui"

func TestMain(m *testing.M) { e2etest.Main(m, prefix, nil) }

// The page as a user opens it: `calicoctl ui`'s default address, inside
// host 1's network namespace (where the browser runs too).
const pageURL = "http://127.0.0.1:9099/"

// artifacts is where the screenshot goes: $CALICO_ARTIFACTS, else a fixed
// directory under the system's temporary one, so it outlives the test.
func artifacts(t *testing.T) string {
	dir := os.Getenv("CALICO_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "calico-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestWebViewFollowsTheDatastore(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: run `make deps` (scripts/install-deps.sh installs Debian's chromium)")
	}
	w := e2etest.World(t, prefix, walkthrough.Options{}, true)
	h1 := w.Hosts[0]
	startUI(t, w, h1)

	ctx := browser(t, chromium, h1)
	// Every wait below is bounded by this; a step that hangs fails the test
	// with the step's name instead of running into the package timeout.
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	// do runs one step with its own bound, named in the failure.
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// waitFor polls the page until js is true.
	waitFor := func(what, js string) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if _, err := chromedp.Run(sctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// screenshot saves the whole page as an artifact.
	screenshot := func(name string) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		out := filepath.Join(artifacts(t), name)
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%d bytes)", out, len(png))
	}
	eval := func(what, js string) any {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		v, err := chromedp.Run(sctx, chromedp.Evaluate[any](js))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}

	do("load the page", chromedp.Navigate(pageURL), chromedp.WaitVisible(chromedp.CSS(`#live[data-state="live"]`)))
	// Both agents report ready, and the node mesh's session is up on each.
	for _, h := range []string{"host1", "host2"} {
		do(h+" healthy with its BGP session up",
			chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-host=%q][data-state="ready"]`, h))),
			chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-host=%q] .peer[data-state="Established"]`, h))))
	}
	summary, _ := eval("summary", `document.getElementById("summary")?.textContent ?? ""`).(string)
	if want := "2 hosts (2 ready), 1 pool, 3 workloads, 2 profiles"; !strings.HasPrefix(summary, want) {
		t.Errorf("summary %q, want it to start %q", summary, want)
	}
	for name, wl := range w.Workloads {
		id := wl.Host.Label + "/" + name
		text, _ := eval("workload "+id, fmt.Sprintf(`document.querySelector('tr[data-workload=%q]')?.textContent ?? ""`, id)).(string)
		if !strings.Contains(text, wl.IP.String()+"/32") {
			t.Errorf("workload %s's row %q lacks its address %s", id, text, wl.IP)
		}
	}
	// The seed's three addresses are all in host 1's first block.
	block, _ := eval("pool and blocks", `document.querySelector('tr[data-pool="192.168.100.0/24"] .block[data-block="192.168.100.0/26"]')?.textContent ?? ""`).(string)
	if !strings.Contains(block, "host1, 3/64") {
		t.Errorf("block 192.168.100.0/26 shows %q, want host1's with 3 of 64 addresses in use", block)
	}

	// The matrix: every cell is what `calicoctl why` says for that pair,
	// ICMP and TCP to port 80 by default, then to the port the form picks.
	var ids []string
	for name, wl := range w.Workloads {
		ids = append(ids, wl.Host.Label+"/"+name)
	}
	slices.Sort(ids)
	cells := func() map[string]string {
		t.Helper()
		raw, _ := eval("the matrix's cells", `JSON.stringify([...document.querySelectorAll("#matrix td.cell a.verdict")].map(a =>
			[a.closest("td").dataset.from, a.closest("td").dataset.to, a.dataset.proto, a.dataset.verdict]))`).(string)
		var rows [][4]string
		if err := json.Unmarshal([]byte(raw), &rows); err != nil {
			t.Fatalf("the matrix's cells %q: %v", raw, err)
		}
		got := map[string]string{}
		for _, r := range rows {
			got[r[0]+" "+r[1]+" "+r[2]] = r[3]
		}
		return got
	}
	matches := func(when string, port int) map[string]string {
		t.Helper()
		want := whyMatrix(ctx, t, w, h1, ids, port)
		if got := cells(); !maps.Equal(got, want) {
			t.Fatalf("%s: the matrix shows\n%v\nbut calicoctl why says\n%v", when, got, want)
		}
		t.Logf("FIGURE: %s: the page's %d matrix cells all match calicoctl why (%s)", when, len(want), tally(want))
		return want
	}
	do("the matrix for tcp/80 is drawn", chromedp.WaitVisible(chromedp.CSS(`#matrix[data-port="80"] td.cell`)))
	matches("tcp/80 (the default)", 80)
	do("pick port 8080 in the form", chromedp.SetValue(chromedp.CSS(`#port input[name="port"]`), "8080"),
		chromedp.Submit(chromedp.CSS(`#port`)),
		chromedp.WaitVisible(chromedp.CSS(`#matrix[data-port="8080"] td.cell`)),
		chromedp.WaitVisible(chromedp.CSS(`#live[data-state="live"]`)))
	before := matches("tcp/8080 (chosen in the form)", 8080)
	// The README's picture: the seed lab with both verdicts in the matrix.
	screenshot("ui.png")

	// A reload would lose this mark, so finding it afterwards shows the
	// change arrived over the event stream.
	eval("mark the page", `window.calicoMark = "no reload"`)
	start := time.Now()
	if _, err := w.Ctl(ctx, h1, "profile", "PROF_1", "rule", "add", "inbound", "allow", "tcp", "to", "ports", "8080"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Ctl(ctx, h1, "container", "worker-2", "profile", "append", "PROF_1"); err != nil {
		t.Fatal(err)
	}
	waitFor("the profile change appears without a reload", `
		[...document.querySelectorAll('tr[data-profile="PROF_1"] .rule')].some(e => e.textContent === "allow tcp to ports 8080") &&
		[...document.querySelectorAll('tr[data-workload="host1/worker-2"] .tag')].some(e => e.textContent === "PROF_1")`)
	t.Logf("the profile change appeared %v after `calicoctl profile ... rule add` began", time.Since(start).Round(time.Millisecond))
	// The cells the change flips, as `calicoctl why` now answers, flip on
	// the page too, through the event stream.
	after := whyMatrix(ctx, t, w, h1, ids, 8080)
	var flipped []string
	for k, v := range after {
		if before[k] != v {
			flipped = append(flipped, k+": "+before[k]+" -> "+v)
		}
	}
	slices.Sort(flipped)
	if len(flipped) == 0 {
		t.Fatal("the profile change flipped no verdict of calicoctl why; the test shows nothing")
	}
	for deadline := time.Now().Add(30 * time.Second); !maps.Equal(cells(), after); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the matrix never showed the change: it shows\n%v\nbut calicoctl why says\n%v", cells(), after)
		}
	}
	t.Logf("FIGURE: the profile change flipped %d cells on the page without a reload (seen %v after it began, asking calicoctl why included): %s",
		len(flipped), time.Since(start).Round(time.Millisecond), strings.Join(flipped, "; "))
	if mark := eval("check the mark", `window.calicoMark`); mark != "no reload" {
		t.Errorf("the page was reloaded (mark %q)", mark)
	}

	// Then the attack: whoever can
	// write the datastore, or a CNI config's labels, puts markup and script
	// in a record. The page must show it as text, run none of it, and keep
	// following the datastore.
	hostile := api.Endpoint{Node: "host2", Workload: `"><svg onload="window.pwned='name'">`, Orchestrator: "cni",
		InterfaceName: "cali0000000000e", IPv4Nets: []string{"192.168.100.66/32"},
		Profiles: []string{`<script>window.pwned='profile'</script>`},
		Labels:   map[string]string{"note": `<img src=x onerror="window.pwned='label'">`}}
	raw, _ := json.Marshal(hostile)
	cli := e2etest.EtcdFrom(t, h1, w.Etcd)
	if _, err := cli.Put(ctx, datastore.EndpointKey("host2", "evil"), string(raw)); err != nil {
		t.Fatal(err)
	}
	waitFor("the hostile record appears as text",
		`document.getElementById("view").textContent.includes(`+"`"+`<img src=x onerror="window.pwned='label'">`+"`"+`)`)
	ran := eval("what the hostile record ran", `String(window.pwned)`)
	made := eval("what the hostile record made", `document.querySelectorAll("#view img, #view svg, #view script").length`)
	t.Logf("FIGURE: hostile record shown as text; script run: %v, elements made: %v", ran, made)
	if ran != "undefined" || made != 0.0 {
		t.Errorf("markup from a datastore record ran (window.pwned=%v) or made %v elements", ran, made)
	}
	if _, err := w.Ctl(ctx, h1, "profile", "PROF_2", "tag", "add", "WEB"); err != nil {
		t.Fatal(err)
	}
	waitFor("an honest change after the attack appears",
		`[...document.querySelectorAll('tr[data-profile="PROF_2"] .tag')].some(e => e.textContent === "WEB")`)
	if mark := eval("check the mark", `window.calicoMark`); mark != "no reload" {
		t.Errorf("the page was reloaded (mark %q)", mark)
	}

	// A click on a cell opens its explanation: the verdict, the flow and
	// every step `calicoctl why` prints for that pair.
	src, dst := "host1/worker-2", "host1/worker-1"
	do("click a cell", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#matrix td.cell[data-from=%q][data-to=%q] a[data-proto="tcp/8080"]`, src, dst))),
		chromedp.WaitVisible(chromedp.CSS(`#verdict`)))
	page, _ := eval("the explanation", `[document.getElementById("verdict").textContent, document.getElementById("flow").textContent,
		...[...document.querySelectorAll("#steps tr.step")].map(tr => [...tr.cells].map(td => td.textContent).join(" "))].join("\n")`).(string)
	text, err := w.Ctl(ctx, h1, "why", src, dst, "--port", "8080")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if !strings.HasPrefix(line, "note: ") {
			want = append(want, strings.Join(strings.Fields(line), " "))
		}
	}
	var got []string
	for _, line := range strings.Split(page, "\n") {
		got = append(got, strings.Join(strings.Fields(line), " "))
	}
	if !slices.Equal(got, want) {
		t.Errorf("the explanation page says\n%s\nbut calicoctl why says\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	t.Logf("FIGURE: clicking %s -> %s tcp/8080 shows %q and the same %d steps as calicoctl why", src, dst, got[0], len(got)-2)
	screenshot("ui-why.png")
}

// whyMatrix runs `calicoctl why` on host h for every ordered pair of ids,
// ICMP and TCP to port, keyed as the page's cells are: "SRC DST PROTO".
func whyMatrix(ctx context.Context, t *testing.T, w *walkthrough.World, h *lab.Host, ids []string, port int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, src := range ids {
		for _, dst := range ids {
			if src == dst {
				continue
			}
			for _, q := range []struct {
				proto string
				args  []string
			}{{"icmp", nil}, {fmt.Sprintf("tcp/%d", port), []string{"--port", strconv.Itoa(port)}}} {
				text, err := w.Ctl(ctx, h, append([]string{"why", src, dst}, q.args...)...)
				if err != nil {
					t.Fatal(err)
				}
				verdict, _, _ := strings.Cut(text, "\n")
				out[src+" "+dst+" "+q.proto] = verdict
			}
		}
	}
	return out
}

// tally counts verdicts: "8 allowed, 4 denied".
func tally(m map[string]string) string {
	n := map[string]int{}
	for _, v := range m {
		n[v]++
	}
	return fmt.Sprintf("%d allowed, %d denied", n["allowed"], n["denied"])
}

// startUI runs `calicoctl ui` on host h as a user would, with its default
// address, and waits until it accepts connections.
func startUI(t *testing.T, w *walkthrough.World, h *lab.Host) {
	t.Helper()
	cmd := exec.Command(filepath.Join(e2etest.BinDir, "calicoctl"), "ui")
	cmd.Env = append(os.Environ(), w.EtcdEnv...)
	p, err := h.StartCmd(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := h.Do(func() error {
			c, err := net.DialTimeout("tcp", "127.0.0.1:9099", time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("calicoctl ui is not serving on 127.0.0.1:9099 in %s: %v; its output:\n%s", h.Name, err, p.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// browser starts headless Chromium inside host h's network namespace (so
// 127.0.0.1 is the host's own) and returns a context for driving it. The
// browser talks to chromedp over inherited pipes, which cross the namespace
// boundary. Chromium runs in a process group of its own, killed whole when
// the test ends, however it ends; if the test binary itself dies, Pdeathsig
// takes the browser with it.
func browser(t *testing.T, chromium string, h *lab.Host) context.Context {
	t.Helper()
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal(err)
	}
	var started *exec.Cmd
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // as root, Chromium refuses to start with its sandbox
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.Args = append([]string{"ip", "netns", "exec", h.Name}, cmd.Args...)
			cmd.Path = ip
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			started = cmd
		}),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		if started == nil || started.Process == nil {
			return
		}
		// chromedp stops the browser above; its helpers (zygote, renderers)
		// share its process group, so kill the group and wait until it is
		// empty, so no Chromium outlives the test.
		pg := -started.Process.Pid
		for deadline := time.Now().Add(10 * time.Second); syscall.Kill(pg, syscall.SIGKILL) == nil; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("Chromium's process group %d is still alive after SIGKILL", -pg)
				return
			}
		}
	})
	// Start the browser now, so a browser that cannot start fails here.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s in %s: %v", chromium, h.Name, err)
	}
	return ctx
}
