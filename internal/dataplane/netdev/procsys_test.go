package netdev

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadNetnsID is the id procSysNet keys the namespace at path by.
func threadNetnsID(t testing.TB, path string) nsID {
	t.Helper()
	var id nsID
	err := runInNetns(path, func() error {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		id = nsID{dev: st.Dev, ino: st.Ino}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func keptNetDir(id nsID) *netDir {
	procSysNet.mu.Lock()
	defer procSysNet.mu.Unlock()
	return procSysNet.m[id]
}

// TestKeptProcSysNetPerNamespace: host-side settings written through the
// kept directories of two namespaces in turn land each in its own
// namespace, never the other's (an open /proc/sys/net/ipv4/conf shows the
// namespace it was opened in to a thread in any namespace).
func TestKeptProcSysNetPerNamespace(t *testing.T) {
	a, aPath := newNetns(t, "a")
	b, bPath := newNetns(t, "b")
	for _, ns := range []string{a, b} {
		ipCmd(t, "-n", ns, "link", "add", "sux0", "type", "veth", "peer", "name", "sux1")
	}
	proxyARP := []string{"net", "ipv4", "conf", "sux0", "proxy_arp"}
	if err := writeHostSysctls(aPath, []sysctl{{key: proxyARP, value: "1"}}); err != nil {
		t.Fatal(err)
	}
	if got := readSysctlIn(t, bPath, proxyARP...); got != "0" {
		t.Fatalf("b's proxy_arp is %s after writing a's", got)
	}
	if err := writeHostSysctls(bPath, []sysctl{{key: proxyARP, value: "1"}}); err != nil {
		t.Fatal(err)
	}
	if err := writeHostSysctls(aPath, []sysctl{{key: proxyARP, value: "0"}}); err != nil {
		t.Fatal(err)
	}
	if ga, gb := readSysctlIn(t, aPath, proxyARP...), readSysctlIn(t, bPath, proxyARP...); ga != "0" || gb != "1" {
		t.Fatalf("proxy_arp a=%s b=%s, want 0 and 1", ga, gb)
	}
	// A namespace new to this process may have the inode number of a gone
	// one whose kept directories are still cached: its first call finds
	// them dead and drops them (TestKeptProcSysNetOfGoneNamespace), and
	// the next keeps its own.
	for _, p := range []string{aPath, bPath} {
		if err := writeHostSysctls(p, []sysctl{{key: proxyARP, value: readSysctlIn(t, p, proxyARP...)}}); err != nil {
			t.Fatal(err)
		}
	}
	if keptNetDir(threadNetnsID(t, aPath)) == nil || keptNetDir(threadNetnsID(t, bPath)) == nil {
		t.Error("directories not kept for both namespaces")
	}
}

// TestKeptProcSysNetOfGoneNamespace: a kept directory whose namespace is
// gone (as when the namespace's inode number is reused by a new one) shows
// no settings; a write through it finds the setting by full path in the
// thread's own namespace, and the dead directory is given up.
func TestKeptProcSysNetOfGoneNamespace(t *testing.T) {
	gone := fmt.Sprintf("nd%s-%dgone", runID, nsCounter.Add(1))
	ipCmd(t, "netns", "add", gone)
	stale := -1
	err := runInNetns("/var/run/netns/"+gone, func() error {
		var err error
		stale, err = unix.Open("/proc/sys/net/ipv4/conf", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return err
	})
	if out, derr := exec.Command("ip", "netns", "del", gone).CombinedOutput(); derr != nil {
		t.Fatalf("ip netns del %s: %v: %s", gone, derr, out)
	}
	if err != nil {
		t.Fatal(err)
	}
	// The namespace's settings go when the kernel's cleanup has run.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		fd, err := unix.Openat(stale, "all/forwarding", unix.O_RDONLY, 0)
		if err == unix.ENOENT {
			break
		}
		if err == nil {
			unix.Close(fd)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deleted namespace's settings are still there (%v)", err)
		}
	}

	host, hostPath := newNetns(t, "h")
	ipCmd(t, "-n", host, "link", "add", "sux0", "type", "veth", "peer", "name", "sux1")
	id := threadNetnsID(t, hostPath)
	dead := &netDir{dirs: map[string]int{"/proc/sys/net/ipv4/conf": stale}}
	procSysNet.mu.Lock()
	if old := procSysNet.m[id]; old != nil {
		procSysNet.dropLocked(id, old)
	}
	procSysNet.m[id] = dead
	procSysNet.mu.Unlock()

	proxyARP := []string{"net", "ipv4", "conf", "sux0", "proxy_arp"}
	if err := writeHostSysctls(hostPath, []sysctl{{key: proxyARP, value: "1"}}); err != nil {
		t.Fatal(err)
	}
	if got := readSysctlIn(t, hostPath, proxyARP...); got != "1" {
		t.Fatalf("proxy_arp = %s, want 1", got)
	}
	if d := keptNetDir(id); d == dead {
		t.Error("the dead namespace's directory is still kept")
	}
	if !dead.dropped {
		t.Error("the dead namespace's directory was not dropped")
	}
	// The next call keeps the namespace's own directory.
	if err := writeHostSysctls(hostPath, []sysctl{{key: proxyARP, value: "0"}}); err != nil {
		t.Fatal(err)
	}
	if d := keptNetDir(id); d == nil || d == dead {
		t.Error("no directory of the namespace's own kept after the stale one went")
	}
	if got := readSysctlIn(t, hostPath, proxyARP...); got != "0" {
		t.Fatalf("proxy_arp = %s, want 0", got)
	}
}

// BenchmarkHostSysctlsNextTo: one host side's settings (read, and a
// proxy_arp write) in a host namespace while 10 or 1000 other namespaces
// have used their /proc/sys/net/ipv6 since (a workload's accept_dad is
// set in its own namespace), with the directories opened by full path per
// call and kept across calls.
func BenchmarkHostSysctlsNextTo(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("namespaces=%d", n), func(b *testing.B) {
			// The host's namespace uses its settings first, as a host does
			// before its workloads start: the kernel adds each namespace's
			// dentry at the head of the name's hash chain, so the host's is
			// then behind every workload's.
			host, hostPath := newNetns(b, "h")
			ipCmd(b, "-n", host, "link", "add", "sux0", "type", "veth", "peer", "name", "sux1")
			settings := hostSideSysctls("sux0", false)
			if _, err := setSysctls(hostPath, settings, false, false); err != nil {
				b.Fatal(err)
			}
			var add, del strings.Builder
			names := make([]string, n)
			for i := range n {
				names[i] = fmt.Sprintf("nd%s-%dx%d", runID, nsCounter.Add(1), i)
				fmt.Fprintf(&add, "netns add %s\n", names[i])
				fmt.Fprintf(&del, "netns del %s\n", names[i])
			}
			b.Cleanup(func() {
				c := exec.Command("ip", "-force", "-batch", "-")
				c.Stdin = strings.NewReader(del.String())
				if out, err := c.CombinedOutput(); err != nil {
					b.Errorf("ip -batch netns del: %v: %s", err, out)
				}
			})
			c := exec.Command("ip", "-batch", "-")
			c.Stdin = strings.NewReader(add.String())
			if out, err := c.CombinedOutput(); err != nil {
				b.Fatalf("ip -batch netns add: %v: %s", err, out)
			}
			for _, name := range names {
				if err := runInNetns("/var/run/netns/"+name, func() error {
					_, err := readSysctl("net", "ipv6", "conf", "lo", "accept_dad")
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
			for _, keep := range []bool{false, true} {
				b.Run(fmt.Sprintf("kept=%v", keep), func(b *testing.B) {
					b.ReportAllocs()
					k := 0
					for b.Loop() {
						// Flip proxy_arp and proxy_delay, so each round writes too.
						k++
						for i := range settings {
							if settings[i].key[len(settings[i].key)-1] == "proxy_arp" {
								settings[i].value = fmt.Sprint(k % 2)
							}
						}
						if _, err := setSysctls(hostPath, settings, false, keep); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

func readSysctl(key ...string) (string, error) {
	d := sysctlDirs{dirs: map[string]int{}}
	defer d.close()
	v, err := d.read(key)
	return strings.TrimSpace(string(v)), err
}
