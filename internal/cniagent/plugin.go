package cniagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// The calico plugin binary is this front: it hands ADD, DEL and CHECK to
// the agent, and everything else, or a call the agent does not take, to
// the full plugin, which lives in the calico-ipam binary (it holds the
// datastore client anyway) and runs as calico when started under the name
// FullPluginName (argv[0], as a multi-call binary; an environment
// variable would also reach calico-ipam when a runtime runs it as IPAM).
// So the common call starts a small process, and the full one starts only
// without an agent.

// FullPluginName is the argv[0] that makes calico-ipam run the calico
// plugin itself.
const FullPluginName = "calico"

// FullPluginBinary is the binary holding the full plugin: beside this one,
// else on CNI_PATH.
const FullPluginBinary = "calico-ipam"

// callTimeout bounds the wait for the agent, as the full plugin bounds
// its own call: runtimes wait with their own deadline.
const callTimeout = 30 * time.Second

// PluginMain is the calico plugin's main.
func PluginMain(about string) {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add: viaAgent("ADD"), Del: viaAgent("DEL"), Check: viaAgent("CHECK"),
		GC: handOver, Status: handOver,
	}, version.All, about)
}

// viaAgent asks the agent; without one, or when the call is not its own,
// the full plugin runs it.
func viaAgent(command string) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		t0 := time.Now()
		rep, err := Call(Socket(), &Request{
			Command: command, ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName,
			Args: args.Args, Stdin: args.StdinData, Env: Env(),
		}, callTimeout)
		if errors.Is(err, ErrNoAgent) || err == nil && rep.Elsewhere != "" {
			return handOver(args)
		}
		if Tracing() {
			// The agent's own phases, then the whole call as the plugin
			// waited for it.
			var phases []TracePhase
			if rep != nil {
				phases = rep.Phases
			}
			WriteTrace(command, "agent", append(phases, TracePhase{Phase: "agent", Ms: float64(time.Since(t0).Microseconds()) / 1000}))
		}
		switch {
		case err != nil:
			// The agent may be doing it still: running it here too could
			// race it. Every command is safe to rerun, which the runtime
			// does on 11.
			return types.NewError(types.ErrTryAgainLater, "calico: "+err.Error(), "check calico-node's log")
		case len(rep.Error) > 0:
			te := &types.Error{}
			if json.Unmarshal(rep.Error, te) != nil || te.Code == 0 {
				return types.NewError(types.ErrInternal, "calico: the agent's answer is malformed", "")
			}
			return te
		}
		_, err = os.Stdout.Write(rep.Stdout)
		return err
	}
}

// handOver runs the full plugin with this call's environment and
// configuration, and exits as it does: its output is the answer.
func handOver(args *skel.CmdArgs) error {
	path, err := fullPlugin()
	if err != nil {
		return types.NewError(types.ErrInternal, "calico: "+err.Error(), "install calico-ipam beside calico")
	}
	cmd := exec.Command(path)
	cmd.Args = []string{FullPluginName}
	cmd.Stdin = strings.NewReader(string(args.StdinData))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Exited() {
			os.Exit(ws.ExitStatus())
		}
	}
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("calico: running %s: %v", path, err), "")
	}
	os.Exit(0)
	return nil
}

func fullPlugin() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), FullPluginBinary)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	for _, dir := range filepath.SplitList(os.Getenv("CNI_PATH")) {
		p := filepath.Join(dir, FullPluginBinary)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is neither beside this plugin nor on CNI_PATH", FullPluginBinary)
}
