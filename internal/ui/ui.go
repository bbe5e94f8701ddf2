// Package ui is the read-only web view `calicoctl ui` serves: hosts with
// their agents' health and BGP sessions, pools and blocks, workloads with
// addresses, labels and profiles, and the place of the reachability matrix.
// Pages are rendered on the server with html/template (which escapes every
// datastore value); the datastore's watch (datastore.Client.Sync) keeps one
// rendered copy current, and server-sent events push it to open pages.
//
// Safe by default: nothing here writes to the datastore, only GET and HEAD
// are served, the Content-Security-Policy allows only the page's own script
// and style, and requests must name the server by an IP address, localhost
// or an allowed host name, so a web page elsewhere cannot read the network's
// layout through DNS rebinding.
package ui

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/calico-go/calico/internal/datastore"
)

//go:embed page.html style.css app.js
var assets embed.FS

var page = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"join": strings.Join,
}).ParseFS(assets, "page.html"))

const (
	// settle lets a burst of datastore changes (a workload add writes
	// several records) become one update instead of many.
	settle = 150 * time.Millisecond
	// recheck re-renders without a change, so a host whose agent stopped
	// reporting turns "down" on open pages too.
	recheck = 5 * time.Second
	// keepalive is how often an idle event stream gets a comment, so
	// proxies and browsers do not close it as dead.
	keepalive = 20 * time.Second
	// maxStreams bounds open event streams: each holds a goroutine and a
	// connection, and the view is for a handful of people.
	maxStreams = 64
)

// Options configure a Server.
type Options struct {
	// AllowHosts are host names (besides IP addresses and localhost) that
	// requests may use in their Host header.
	AllowHosts []string
	Log        *slog.Logger
}

// Server keeps the rendered view current and serves it.
type Server struct {
	ds   *datastore.Client
	opts Options
	now  func() time.Time
	// every is how often the view is re-rendered without a change and the
	// datastore is asked whether it still answers (recheck; tests shorten it).
	every time.Duration

	mu      sync.Mutex
	recs    records
	synced  bool          // a first snapshot has arrived
	dirty   chan struct{} // signalled when recs changed
	view    []byte        // the rendered #view fragment
	changed chan struct{} // closed when view is replaced
	streams int
	// lost says why the datastore stopped answering, and since when; ""
	// while it answers. The watch alone cannot tell a quiet datastore from
	// a dead one, and a stale page must say it is stale.
	lost      string
	lostSince time.Time
}

// New returns a server reading ds; Run must run for it to see anything.
func New(ds *datastore.Client, o Options) *Server {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	s := &Server{ds: ds, opts: o, now: time.Now, every: recheck, recs: records{},
		dirty: make(chan struct{}, 1), changed: make(chan struct{})}
	s.render()
	return s
}

// Run follows the datastore and re-renders on every change until ctx ends.
func (s *Server) Run(ctx context.Context) {
	go s.ds.Sync(ctx, datastore.Root, s, s.opts.Log)
	go s.probe(ctx)
	tick := time.NewTicker(s.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.dirty:
			select {
			case <-ctx.Done():
				return
			case <-time.After(settle):
			}
		case <-tick.C:
		}
		s.render()
	}
}

// probe reads one key every s.every and records whether the datastore
// answered.
func (s *Server) probe(ctx context.Context) {
	tick := time.NewTicker(s.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		_, _, err := s.ds.GetRaw(ctx, datastore.KeyBGPConfig)
		if ctx.Err() != nil {
			return
		}
		lost := ""
		if err != nil && !errors.Is(err, datastore.ErrNotFound) {
			lost = err.Error()
		}
		s.mu.Lock()
		was := s.lost
		if lost != "" && was == "" {
			s.lostSince = s.now()
		}
		s.lost = lost
		s.mu.Unlock()
		if (lost == "") != (was == "") {
			s.markDirty()
		}
	}
}

// OnSnapshot implements datastore.SyncHandler.
func (s *Server) OnSnapshot(kvs map[string][]byte) {
	s.mu.Lock()
	s.recs, s.synced = kvs, true
	s.mu.Unlock()
	s.markDirty()
}

// OnUpdate implements datastore.SyncHandler.
func (s *Server) OnUpdate(key string, value []byte) {
	s.mu.Lock()
	if value == nil {
		delete(s.recs, key)
	} else {
		s.recs[key] = value
	}
	s.mu.Unlock()
	s.markDirty()
}

func (s *Server) markDirty() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// viewData is what page.html's "view" template gets.
type viewData struct {
	View
	Synced bool
	// Lost is why the datastore stopped answering and LostSince when
	// (RFC 3339); "" while it answers.
	Lost, LostSince string
}

// render rebuilds the fragment and wakes the streams when it differs.
func (s *Server) render() {
	s.mu.Lock()
	data := viewData{View: build(s.recs, s.now()), Synced: s.synced, Lost: s.lost}
	if s.lost != "" {
		data.LostSince = s.lostSince.UTC().Format(time.RFC3339)
	}
	s.mu.Unlock()
	var b bytes.Buffer
	if err := page.ExecuteTemplate(&b, "view", data); err != nil {
		// The templates are fixed and the data is plain values: an error
		// here is a bug, not input; keep showing the last good view.
		s.opts.Log.Error("rendering the view failed", "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes.Equal(b.Bytes(), s.view) {
		return
	}
	s.view = b.Bytes()
	close(s.changed)
	s.changed = make(chan struct{})
}

// current returns the rendered fragment and a channel closed when it is
// replaced.
func (s *Server) current() ([]byte, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view, s.changed
}

// Handler serves the page, its assets and the event stream.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.servePage)
	mux.HandleFunc("GET /events", s.serveEvents)
	for _, a := range []struct{ name, ctype string }{
		{"style.css", "text/css; charset=utf-8"},
		{"app.js", "text/javascript; charset=utf-8"},
	} {
		body, _ := assets.ReadFile(a.name)
		mux.HandleFunc("GET /"+a.name, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", a.ctype)
			w.Write(body)
		})
	}
	return s.guard(mux)
}

// The page may load only its own script and style, connect only back to
// this server, and be framed by nobody.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// guard sets the security headers on every answer and turns away what the
// view never needs: other methods, and Host names that could be a
// rebinding attack's.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "the view is read-only: only GET and HEAD", http.StatusMethodNotAllowed)
			return
		}
		if !s.allowedHost(r.Host) {
			http.Error(w, "unknown Host "+r.Host+": open the view by its IP address or localhost, or start it with --allow-host NAME", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// allowedHost accepts IP addresses, localhost and the configured names. A
// rebinding attack needs a name of the attacker's, so it fails here.
func (s *Server) allowedHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if net.ParseIP(host) != nil || strings.EqualFold(host, "localhost") {
		return true
	}
	for _, a := range s.opts.AllowHosts {
		if strings.EqualFold(host, a) {
			return true
		}
	}
	return false
}

func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	view, _ := s.current()
	var b bytes.Buffer
	if err := page.Execute(&b, template.HTML(view)); err != nil {
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		s.opts.Log.Error("rendering the page failed", "err", err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b.Bytes())
}

// serveEvents streams the view: the current one at once (the page may be
// older than the stream), then each new one as it is rendered.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.streams >= maxStreams {
		s.mu.Unlock()
		http.Error(w, "too many open views; close some tabs", http.StatusServiceUnavailable)
		return
	}
	s.streams++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.streams--
		s.mu.Unlock()
	}()

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	alive := time.NewTicker(keepalive)
	defer alive.Stop()
	for {
		view, changed := s.current()
		if _, err := w.Write(event("view", view)); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
	wait:
		for {
			select {
			case <-r.Context().Done():
				return
			case <-changed:
				break wait
			case <-alive.C:
				if _, err := w.Write([]byte(": keepalive\n\n")); err != nil || rc.Flush() != nil {
					return
				}
			}
		}
	}
}

// event frames data as one server-sent event: each line of data on a
// "data:" line of its own (the browser joins them back with newlines).
func event(name string, data []byte) []byte {
	var b bytes.Buffer
	b.WriteString("event: " + name + "\n")
	for _, line := range bytes.Split(data, []byte("\n")) {
		b.WriteString("data: ")
		b.Write(bytes.TrimSuffix(line, []byte("\r")))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// Serve serves the view on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, s *Server) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.opts.Log.Handler(), slog.LevelWarn),
		// Requests inherit ctx, so open event streams end with it and
		// Shutdown does not wait for them.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	go s.Run(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if srv.Shutdown(sctx) != nil {
		srv.Close()
	}
	return nil
}
