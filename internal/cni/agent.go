package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"

	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/cniagent"
	"github.com/calico-go/calico/internal/datastore"
)

// The agent path (package cniagent has the wire and the plugin's front):
// the front hands ADD, DEL and CHECK to this host's agent, whose Server
// runs the same op the full plugin would, with its own datastore
// connection. The result is the same either way, only the cost differs.

// Server serves the CNI socket for one agent: Node's calls on the
// datastore Datastore names, through C.
type Server struct {
	C         *client.Client
	Node      string
	Datastore datastore.Config
	Log       *slog.Logger
	refused   refusedLog
}

// maxCalls bounds the calls served at once; more wait to be accepted.
const maxCalls = 64

// Serve listens on socket (cniagent.Socket()) until ctx ends.
func (s *Server) Serve(ctx context.Context, socket string) error {
	l, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("CNI socket %s: %w", socket, err)
	}
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	slots := make(chan struct{}, maxCalls)
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("CNI socket %s: %w", socket, err)
		}
		slots <- struct{}{}
		go func() {
			defer func() { <-slots }()
			s.serveConn(ctx, c.(*net.UnixConn))
		}()
	}
}

// requestWait bounds the wait for a caller's request: a plugin writes it
// at once.
const requestWait = 5 * time.Second

func (s *Server) serveConn(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	// Where this call's time goes, for the plugin's trace: a few clock
	// reads, so every call carries it.
	t := &client.Trace{}
	if s.C != nil && s.C.DS != nil {
		t.Count = s.C.DS.Calls // the connection's: exact one call at a time
	}
	ctx = client.WithTrace(ctx, t)
	if err := cniagent.CheckPeer(c); err != nil {
		s.refused.note(s.Log, err)
		return // not a word to a stranger
	}
	c.SetReadDeadline(time.Now().Add(requestWait))
	var req cniagent.Request
	dec := json.NewDecoder(io.LimitReader(c, cniagent.MaxMessage))
	dec.DisallowUnknownFields()
	var rep cniagent.Reply
	if err := dec.Decode(&req); err != nil {
		rep = errorReply(types.NewError(types.ErrDecodingFailure, "calico agent: reading the request: "+err.Error(), ""))
	} else {
		client.MarkPhase(ctx, "request")
		rep = s.handle(ctx, &req)
		client.MarkPhase(ctx, "result")
		for _, m := range t.Marks() {
			rep.Phases = append(rep.Phases, cniagent.TracePhase{Phase: m.Phase, Ms: float64(m.Took.Microseconds()) / 1000, Calls: m.Calls})
		}
	}
	c.SetWriteDeadline(time.Now().Add(requestWait))
	if err := json.NewEncoder(c).Encode(&rep); err != nil {
		s.Log.Warn("CNI socket: answer not delivered", "container", req.ContainerID, "err", err)
	}
}

// handle runs one call. Everything in req is checked here again, as if
// skel had never seen it: the socket is the trust boundary.
func (s *Server) handle(ctx context.Context, req *cniagent.Request) cniagent.Reply {
	fn, args, err := checkRequest(req)
	if err != nil {
		return errorReply(err)
	}
	conf, err := ParseConf(args.StdinData)
	if err != nil {
		return errorReply(err)
	}
	if why := s.elsewhere(conf, req.Env); why != "" {
		return cniagent.Reply{Elsewhere: why}
	}
	name, err := WorkloadName(args.ContainerID, args.IfName)
	if err != nil {
		return errorReply(err)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := fn(ctx, &session{conf: conf, c: s.C, node: s.Node}, args, name)
	if err != nil {
		return errorReply(err)
	}
	if res == nil {
		return cniagent.Reply{}
	}
	v, err := res.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return errorReply(types.NewError(types.ErrIncompatibleCNIVersion, "calico: "+err.Error(), ""))
	}
	var out bytes.Buffer
	if err := v.PrintTo(&out); err != nil {
		return errorReply(err)
	}
	return cniagent.Reply{Stdout: out.Bytes()}
}

// checkRequest checks what skel checks in the plugin (command, container
// id, interface name, netns) and bounds every field.
func checkRequest(req *cniagent.Request) (op, *skel.CmdArgs, error) {
	bad := func(format string, a ...any) error {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "calico agent: "+fmt.Sprintf(format, a...), "")
	}
	fn := ops[req.Command]
	if fn == nil {
		return nil, nil, bad("command %.20q is not served here (ADD, DEL, CHECK)", req.Command)
	}
	for what, v := range map[string]string{"container id": req.ContainerID, "netns": req.Netns, "interface": req.IfName, "CNI_ARGS": req.Args} {
		if len(v) > cniagent.MaxField || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return nil, nil, bad("%s is not valid text of at most %d bytes", what, cniagent.MaxField)
		}
	}
	for k, v := range req.Env {
		if !slices.Contains(cniagent.EnvKeys, k) || len(v) > cniagent.MaxField || strings.ContainsRune(v, 0) {
			return nil, nil, bad("environment variable %.40q is not taken, or too long", k)
		}
	}
	if err := utils.ValidateContainerID(req.ContainerID); err != nil {
		return nil, nil, err
	}
	if err := utils.ValidateInterfaceName(req.IfName); err != nil {
		return nil, nil, err
	}
	// DEL may come without a namespace (it is gone); the others need one.
	if req.Netns != "" || req.Command != "DEL" {
		if !filepath.IsAbs(req.Netns) || filepath.Clean(req.Netns) != req.Netns {
			return nil, nil, bad("netns %.80q is not a clean absolute path", req.Netns)
		}
	}
	return fn, &skel.CmdArgs{ContainerID: req.ContainerID, Netns: req.Netns, IfName: req.IfName, Args: req.Args, StdinData: req.Stdin}, nil
}

// elsewhere says why a call is not this agent's ("" if it is): its
// configuration and environment name another datastore, or another node.
// The plugin then runs it itself, reaching what it names.
func (s *Server) elsewhere(conf *NetConf, env map[string]string) string {
	theirs := datastore.ConfigFrom(conf.EtcdEndpoints, func(k string) string { return env[k] })
	if !theirs.Same(s.Datastore) {
		return fmt.Sprintf("the call's datastore %v is not this agent's %v", theirs.Endpoints, s.Datastore.Endpoints)
	}
	node := conf.Nodename
	if node == "" {
		node = env["CALICO_NODENAME"]
	}
	if node != "" && node != s.Node {
		return fmt.Sprintf("the call is for node %q, this agent is %q", node, s.Node)
	}
	return ""
}

// errorReply carries err as the CNI error the plugin returns.
func errorReply(err error) cniagent.Reply {
	var te *types.Error
	if !errors.As(err, &te) {
		te = types.NewError(types.ErrInternal, err.Error(), "")
	}
	b, merr := json.Marshal(te)
	if merr != nil {
		b, _ = json.Marshal(types.NewError(types.ErrInternal, "calico agent: an unprintable error", ""))
	}
	return cniagent.Reply{Error: b}
}
