package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"
)

// DefaultImage is the test image's usual tag.
const DefaultImage = "calico-go-test/busybox:1"

// BusyboxPath is Debian's busybox-static. It must be the static build: the
// image has no C library.
const BusyboxPath = "/bin/busybox"

// imageLabel marks images made here, so a person listing images can tell
// where this one came from.
const imageLabel = "org.calico-go.test-image=busybox-static"

// baseApplets are linked even if `busybox --list` fails to name them; they
// are what the tests and the flows use.
var baseApplets = []string{
	"sh", "ash", "sleep", "ping", "ping6", "nc", "ip", "ifconfig", "route", "wget", "cat",
	"hostname", "echo", "ls", "ps", "kill", "env", "grep", "awk", "sed", "cut", "head", "tail",
	"true", "false", "test", "[", "mkdir", "rm", "cp", "mv", "ln", "touch", "date", "id",
	"uname", "netstat", "nslookup", "traceroute", "arp", "arping", "httpd", "timeout", "seq",
	"wc", "tr", "sort", "uniq", "printf", "top", "free", "df", "mount", "umount",
}

// imageMu serialises EnsureImage within this process, so parallel tests do
// not import the same image twice.
var imageMu sync.Mutex

// EnsureImage makes sure the engine at dockerHost ("" for the machine's own)
// has the busybox test image under tag (e.g. DefaultImage), importing it
// from a root filesystem built here when it does not. The image runs
// /bin/sh by default, so `docker run -tid IMAGE` gives a container that
// keeps running.
func EnsureImage(ctx context.Context, dockerHost, tag string) error {
	c, err := NewClient(dockerHost)
	if err != nil {
		return err
	}
	return c.EnsureImage(ctx, tag)
}

// EnsureImage is the package's EnsureImage on this client's engine.
func (c *Client) EnsureImage(ctx context.Context, tag string) error {
	repo, version := splitTag(tag)
	imageMu.Lock()
	defer imageMu.Unlock()
	ok, err := c.ImageExists(ctx, repo+":"+version)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	rootfs, err := BuildRootfs()
	if err != nil {
		return err
	}
	if err := c.ImportImage(ctx, bytes.NewReader(rootfs), repo, version,
		`CMD ["/bin/sh"]`, "ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin", "LABEL "+imageLabel); err != nil {
		return err
	}
	// Trust but verify: an import that silently did nothing would otherwise
	// surface later as a confusing "No such image" from a container create.
	if ok, err := c.ImageExists(ctx, repo+":"+version); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("docker import %s:%s reported success but the engine at %s has no such image", repo, version, c.Socket)
	}
	return nil
}

// splitTag splits "repo:tag" (the repo may hold a registry port, "a:5000/b").
func splitTag(ref string) (repo, tag string) {
	i := strings.LastIndexByte(ref, ':')
	if i < 0 || strings.Contains(ref[i+1:], "/") {
		return ref, "latest"
	}
	return ref[:i], ref[i+1:]
}

// BuildRootfs returns a tar of the test image's root filesystem: the static
// busybox as /bin/busybox, a symlink per applet in /bin, a minimal /etc
// (passwd, group), and /tmp. The files' times are fixed, so the tarball is
// the same on every run.
func BuildRootfs() ([]byte, error) {
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("dockertest: the test image needs Debian's busybox-static at %s: %v (apt-get install -y --no-install-recommends busybox-static, or run scripts/install-deps.sh)", BusyboxPath, err)
	}
	if err := checkStatic(bb); err != nil {
		return nil, err
	}
	applets := appletList()

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: mtime})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	link := func(name, target string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: mtime})
	}
	steps := []func() error{
		func() error { return dir("bin", 0o755) },
		func() error { return dir("sbin", 0o755) },
		func() error { return dir("usr", 0o755) },
		func() error { return dir("usr/bin", 0o755) },
		func() error { return dir("etc", 0o755) },
		func() error { return dir("root", 0o700) },
		func() error { return dir("tmp", 0o1777) },
		func() error { return dir("var", 0o755) },
		func() error { return dir("var/run", 0o755) },
		func() error { return file("bin/busybox", 0o755, bb) },
		func() error {
			return file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
		},
		func() error { return file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")) },
		// Scripts with `#!/usr/bin/env sh` work too.
		func() error { return link("usr/bin/env", "/bin/busybox") },
	}
	for _, a := range applets {
		steps = append(steps, func() error { return link("bin/"+a, "busybox") })
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, fmt.Errorf("dockertest: building the image's tarball: %v", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("dockertest: building the image's tarball: %v", err)
	}
	return buf.Bytes(), nil
}

// checkStatic refuses a dynamically linked busybox (Debian's plain "busybox"
// package also installs /bin/busybox): in the image it would fail to start
// with a bare "no such file or directory".
func checkStatic(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("dockertest: %s is not an ELF binary: %v", BusyboxPath, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("dockertest: %s is dynamically linked; the test image needs Debian's busybox-static (apt-get install -y --no-install-recommends busybox-static)", BusyboxPath)
		}
	}
	return nil
}

// appletList is every applet this busybox has (so the image offers what a
// user of busybox expects), plus the base list, sorted and without
// "busybox" itself.
func appletList() []string {
	set := map[string]bool{}
	for _, a := range baseApplets {
		set[a] = true
	}
	if out, err := exec.Command(BusyboxPath, "--list").Output(); err == nil {
		for _, a := range strings.Fields(string(out)) {
			if !strings.Contains(a, "/") {
				set[a] = true
			}
		}
	}
	delete(set, "busybox")
	list := make([]string, 0, len(set))
	for a := range set {
		list = append(list, a)
	}
	sort.Strings(list)
	return list
}
