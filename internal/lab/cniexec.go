package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// CNIExec runs CNI plugins in a lab host's namespace, as a runtime on that
// host would (libcni's invoke.Exec): the host side of the veth lands there
// and the datastore is reached over the host's fabric. The child is forked
// from a thread inside the namespace, so no wrapper (ip netns exec) adds its
// own cost to a timed call.
type CNIExec struct{ Host *Host }

func (e CNIExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A child inherits the namespace of the thread that forks it.
	if err := e.Host.Do(cmd.Start); err != nil {
		return nil, fmt.Errorf("%s: %w", pluginPath, err)
	}
	if err := cmd.Wait(); err != nil {
		// A plugin's failure is a CNI error on stdout, as invoke.RawExec reads it.
		te := &types.Error{}
		if json.Unmarshal(stdout.Bytes(), te) == nil && te.Msg != "" {
			return nil, te
		}
		return nil, fmt.Errorf("%s: %w: %s%s", pluginPath, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

func (CNIExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (CNIExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}
