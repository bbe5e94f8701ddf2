package libnetwork

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ManagedEngineSocket is where the managed plugin sees the engine's API
// socket (its config mounts the host's there; `docker plugin set calico
// docker-sock.source=PATH` moves the host side).
const ManagedEngineSocket = "/run/docker.sock"

// pluginConfig is the managed plugin's config.json: calico-node as the
// entrypoint, both drivers on one socket, in the host's network and pid
// namespaces (the agent wires the host; it finds a CALICO_IP container's
// namespace as /proc/PID/ns/net), with the capabilities that takes.
func pluginConfig() map[string]any {
	env := func(name, desc string) map[string]any {
		return map[string]any{"name": name, "description": desc, "settable": []string{"value"}, "value": ""}
	}
	return map[string]any{
		"description":   "Calico networking: calico-node with its network driver and IPAM driver",
		"documentation": "see README.md, section Docker",
		"entrypoint":    []string{"/calico-node", "managed-plugin"},
		"workdir":       "/",
		"interface": map[string]any{
			"types":  []string{"docker.networkdriver/1.0", "docker.ipamdriver/1.0"},
			"socket": NetworkDriverName + ".sock",
		},
		"network": map[string]any{"type": "host"},
		"pidhost": true,
		"linux": map[string]any{
			// NET_ADMIN: links, routes, nftables; SYS_ADMIN: setns and
			// /proc/sys; SYS_PTRACE: other processes' namespaces;
			// NET_BIND_SERVICE: BGP on 179; NET_RAW: probes; BPF and
			// PERFMON: the IPIP programs (kernels since 5.11 charge their
			// memory to the cgroup, so no SYS_RESOURCE for rlimits).
			"capabilities": []string{"CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_NET_BIND_SERVICE",
				"CAP_NET_RAW", "CAP_BPF", "CAP_PERFMON", "CAP_DAC_OVERRIDE"},
			"allowAllDevices": false,
			"devices":         nil,
		},
		"mounts": []map[string]any{{
			"name": "docker-sock", "description": "the engine's API socket (on the host)",
			"source": "/var/run/docker.sock", "destination": ManagedEngineSocket,
			"type": "bind", "options": []string{"rbind"}, "settable": []string{"source"},
		}},
		"env": []map[string]any{
			env("ETCD_ENDPOINTS", "the datastore: comma-separated URLs"),
			env("CALICO_IP", "this host's IPv4 address (calico-node --ip)"),
			env("CALICO_IP6", "this host's IPv6 address (calico-node --ip6), optional"),
			env("CALICO_NODENAME", "the node's name (default: the host name)"),
			env("CALICO_NODE_ARGS", "more calico-node flags, space-separated"),
		},
		"args": map[string]any{"name": "args", "description": "more calico-node flags", "settable": []string{"value"}, "value": []string{}},
	}
}

// WritePluginBundle makes dir a bundle for `docker plugin create NAME
// dir`: config.json and a rootfs holding the static calico-node binary and
// the directories it writes to. Nothing is fetched from a registry.
func WritePluginBundle(dir, calicoNode string) error {
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.RemoveAll(rootfs); err != nil {
		return err
	}
	// The engine mounts /proc, /sys, /dev, /etc/hosts and /etc/resolv.conf
	// and the socket directory; the agent keeps state in the others.
	for _, d := range []string{"proc", "sys", "dev", "etc", "tmp", "run/docker/plugins", "var/run", "var/lib/calico", "var/log"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	for _, f := range []string{"etc/hosts", "etc/resolv.conf", "run/docker.sock"} {
		if err := os.WriteFile(filepath.Join(rootfs, f), nil, 0o644); err != nil {
			return err
		}
	}
	// nft resolves the protocol and service names of the table's rules
	// (ipv6-icmp, ...) through these: without them every write of the
	// table failed in the plugin, and the agent's policy gate kept the
	// host's workloads unrouted.
	for _, f := range []string{"etc/protocols", "etc/services"} {
		if err := copyFile("/"+f, filepath.Join(rootfs, f), 0o644); err != nil {
			return fmt.Errorf("copy /%s into the plugin (nft needs it): %w", f, err)
		}
	}
	if err := copyFile(calicoNode, filepath.Join(rootfs, "calico-node"), 0o755); err != nil {
		return fmt.Errorf("copy calico-node into the plugin: %w", err)
	}
	for _, prog := range hostPrograms {
		if err := copyProgram(rootfs, prog.name); err != nil {
			if prog.required {
				return fmt.Errorf("%s (calico-node needs it): %w", prog.name, err)
			}
			continue
		}
	}
	// iptables loads its matches and targets at run time.
	mods, _ := filepath.Glob("/usr/lib/*/xtables")
	mods = append(mods, "/usr/lib/xtables", "/usr/libexec/xtables")
	for _, d := range mods {
		files, _ := filepath.Glob(filepath.Join(d, "*.so"))
		for _, f := range files {
			if err := copyWithLibs(rootfs, f, f); err != nil {
				return err
			}
		}
	}
	b, err := json.MarshalIndent(pluginConfig(), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), append(b, '\n'), 0o644)
}

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// hostPrograms are what calico-node runs besides itself: nft for its
// table, iptables for the engine's DOCKER-USER chain (the same program as
// the engine's, so the same backend). They come from this host with the
// shared libraries they load.
var hostPrograms = []struct {
	name     string
	required bool
}{{"nft", true}, {"iptables", false}, {"ip6tables", false}}

// copyProgram puts the program found on PATH at the same path in rootfs,
// as a file of that name (a multi-call binary tells by its name).
func copyProgram(rootfs, name string) error {
	path, err := exec.LookPath(name)
	if err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	return copyWithLibs(rootfs, real, path)
}

// copyWithLibs copies from (a program or module) to rootfs/to, and each
// shared library ldd lists for it to its own path.
func copyWithLibs(rootfs, from, to string) error {
	if err := os.MkdirAll(filepath.Join(rootfs, filepath.Dir(to)), 0o755); err != nil {
		return err
	}
	if err := copyFile(from, filepath.Join(rootfs, to), 0o755); err != nil {
		return err
	}
	out, err := exec.Command("ldd", from).Output()
	if err != nil {
		return nil // static, or no ldd: nothing to add
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		var lib string
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			lib = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			lib = f[0] // the loader
		default:
			continue
		}
		dst := filepath.Join(rootfs, lib)
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := copyFile(lib, dst, 0o755); err != nil {
			return fmt.Errorf("library %s of %s: %w", lib, from, err)
		}
	}
	return nil
}
