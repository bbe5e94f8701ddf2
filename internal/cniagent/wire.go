// Package cniagent is the wire between the calico CNI plugin and the
// agent of its host (calico-node): the plugin hands an ADD, DEL or CHECK
// to the agent, which already holds a datastore connection, and prints
// the agent's answer. Starting a process that dials etcd and makes a dozen
// round trips costs more than the work itself; the agent does the same
// work (internal/cni) without either.
//
// The socket is an abstract unix socket: it belongs to the network
// namespace it is bound in, so a plugin reaches the agent of the host it
// runs on (the veth's host side is made in that namespace), and several
// hosts made of namespaces on one machine keep apart. An abstract socket
// has no file mode, so each side checks the other's credentials
// (SO_PEERCRED): both must be root in the initial user namespace. A
// socket bound by anyone else is no agent, and the plugin does the work
// itself.
//
// This package imports nothing heavy: the plugin binary links it without
// the datastore client.
package cniagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultSocket is the agent's socket in its network namespace ('@' is
// Go's spelling of the abstract namespace).
const DefaultSocket = "@calico/cni"

// Socket is the socket's name: CALICO_CNI_SOCKET when set (tests run an
// agent of their own beside a real one), else DefaultSocket. "none" turns
// the agent path off.
func Socket() string {
	if s := os.Getenv("CALICO_CNI_SOCKET"); s != "" {
		return s
	}
	return DefaultSocket
}

// Limits on what crosses the socket. The largest honest request is a
// conflist entry with a prevResult: kilobytes.
const (
	MaxMessage = 1 << 20
	MaxField   = 4096
)

// Request is one plugin call as the runtime made it.
type Request struct {
	Command     string `json:"command"` // ADD, DEL or CHECK
	ContainerID string `json:"containerID"`
	Netns       string `json:"netns"`
	IfName      string `json:"ifName"`
	Args        string `json:"args"`
	// Stdin is the network configuration the runtime passed.
	Stdin []byte `json:"stdin"`
	// Env holds the plugin's environment variables that choose the
	// datastore and the node (EnvKeys); the agent serves only calls for
	// its own.
	Env map[string]string `json:"env,omitempty"`
}

// EnvKeys are the environment variables the plugin forwards.
var EnvKeys = []string{"ETCD_ENDPOINTS", "ETCD_AUTHORITY", "ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE", "CALICO_NODENAME"}

// Reply is the agent's answer: Stdout is what the plugin prints on
// success; Error a CNI error (its JSON: code, msg, details); Elsewhere,
// set instead of both, says why this agent does not serve the call (another
// datastore or node): the plugin then does the work itself.
type Reply struct {
	Stdout    []byte          `json:"stdout,omitempty"`
	Error     json.RawMessage `json:"error,omitempty"`
	Elsewhere string          `json:"elsewhere,omitempty"`
	// Phases say where the agent's time went (and its datastore round
	// trips), for the plugin's trace (TraceEnv). A plugin that does not
	// trace ignores them; they cost the agent a clock read per phase.
	Phases []TracePhase `json:"phases,omitempty"`
}

// ErrNoAgent means no agent serves this namespace's socket (none runs, or
// the socket's owner is not root): the plugin does the work itself.
var ErrNoAgent = errors.New("no calico agent on this host's CNI socket")

// Call sends req to the agent at socket and waits up to timeout for its
// reply. It returns ErrNoAgent (wrapped) when there is nobody to ask; any
// other error came after the request may have been taken.
func Call(socket string, req *Request, timeout time.Duration) (*Reply, error) {
	if socket == "none" {
		return nil, fmt.Errorf("%w (CALICO_CNI_SOCKET=none)", ErrNoAgent)
	}
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoAgent, err)
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	// Fail closed: a socket anyone but root bound gets nothing.
	if err := CheckPeer(uc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoAgent, err)
	}
	c.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, fmt.Errorf("calico agent: sending the request: %w", err)
	}
	uc.CloseWrite()
	var rep Reply
	if err := json.NewDecoder(io.LimitReader(c, MaxMessage)).Decode(&rep); err != nil {
		return nil, fmt.Errorf("calico agent: reading its answer: %w", err)
	}
	return &rep, nil
}

// CheckPeer accepts the other end of c only if it is root. SO_PEERCRED
// gives the uid as this user namespace sees it: root of a user namespace
// of its own is not 0 here.
func CheckPeer(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("peer credentials: %w", cerr)
	}
	if cred.Uid != 0 {
		return fmt.Errorf("peer pid %d is uid %d, not root", cred.Pid, cred.Uid)
	}
	return nil
}

// Env is this process's values of EnvKeys, those set.
func Env() map[string]string {
	out := map[string]string{}
	for _, k := range EnvKeys {
		if v, ok := os.LookupEnv(k); ok {
			out[k] = v
		}
	}
	return out
}
