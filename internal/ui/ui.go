// Package ui is the read-only web view `calicoctl ui` serves: hosts with
// their agents' health and BGP sessions, pools and blocks, workloads with
// addresses, labels and profiles, and who can reach whom: a matrix of
// `calicoctl why` verdicts (client.Model, the calc model the agents render)
// for every pair of workloads, each linked to its explanation at /why.
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
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/datastore"
)

//go:embed page.html why.html style.css app.js
var assets embed.FS

var page = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"join": strings.Join,
}).ParseFS(assets, "page.html", "why.html"))

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
	// maxMatrices bounds the matrices kept rendered per model (one per
	// port pages asked for); others are rendered for each request.
	maxMatrices = 8
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
	view    []byte        // the rendered #view fragment, without the matrix
	changed chan struct{} // closed when view or model is replaced
	// stale says recs changed since model was built.
	stale bool
	// model answers the matrix's and /why's questions about recs as the
	// agents see them; rebuilt by render when recs changed.
	model *client.Model
	// matrices are model's rendered matrices by TCP port.
	matrices map[uint16][]byte
	// mx serializes rendering a matrix, so streams woken together by a
	// change compute each port's once.
	mx      sync.Mutex
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
	s := &Server{ds: ds, opts: o, now: time.Now, every: recheck, recs: records{}, stale: true,
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
	s.recs, s.synced, s.stale = kvs, true, true
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
	s.stale = true
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

// render rebuilds the fragment, and the model with the default port's
// matrix when the records changed, and wakes the streams when either
// differs. Run calls it after changes settle, which debounces the model.
func (s *Server) render() {
	s.mu.Lock()
	data := viewData{View: build(s.recs, s.now()), Synced: s.synced, Lost: s.lost}
	if s.lost != "" {
		data.LostSince = s.lostSince.UTC().Format(time.RFC3339)
	}
	var recs records
	if s.stale {
		recs, s.stale = maps.Clone(s.recs), false
	}
	s.mu.Unlock()
	var b bytes.Buffer
	if err := page.ExecuteTemplate(&b, "view", data); err != nil {
		// The templates are fixed and the data is plain values: an error
		// here is a bug, not input; keep showing the last good view, and
		// build the model next time.
		s.opts.Log.Error("rendering the view failed", "err", err)
		if recs != nil {
			s.mu.Lock()
			s.stale = true
			s.mu.Unlock()
		}
		return
	}
	var model *client.Model
	var mx []byte
	if recs != nil {
		var cfg datastore.Config
		if s.ds != nil {
			cfg = s.ds.Config()
		}
		model = client.ModelOf(recs, cfg)
		mx = s.renderMatrix(model, DefaultPort)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if model == nil && bytes.Equal(b.Bytes(), s.view) {
		return
	}
	s.view = b.Bytes()
	if model != nil {
		s.model, s.matrices = model, map[uint16][]byte{DefaultPort: mx}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// renderMatrix renders m's matrix for a TCP port.
func (s *Server) renderMatrix(m *client.Model, port uint16) []byte {
	var b bytes.Buffer
	if err := page.ExecuteTemplate(&b, "matrix", buildMatrix(m, port)); err != nil {
		s.opts.Log.Error("rendering the matrix failed", "err", err)
		return []byte(`<section id="matrix"><p class="note">The matrix could not be drawn; see calicoctl ui's log.</p></section>`)
	}
	return b.Bytes()
}

// current returns the rendered fragment with the matrix for port, and a
// channel closed when it may have changed.
func (s *Server) current(port uint16) ([]byte, <-chan struct{}) {
	s.mu.Lock()
	view, changed, m, mx := s.view, s.changed, s.model, s.matrices[port]
	s.mu.Unlock()
	if mx == nil {
		mx = s.matrixFor(m, port)
	}
	return append(slices.Clip(view), mx...), changed
}

// matrixFor renders m's matrix for port once, keeping it while m is the
// model and fewer than maxMatrices are kept.
func (s *Server) matrixFor(m *client.Model, port uint16) []byte {
	s.mx.Lock()
	defer s.mx.Unlock()
	s.mu.Lock()
	mx, ok := s.matrices[port]
	ok = ok && s.model == m
	s.mu.Unlock()
	if ok {
		return mx
	}
	mx = s.renderMatrix(m, port)
	s.mu.Lock()
	if s.model == m && len(s.matrices) < maxMatrices {
		s.matrices[port] = mx
	}
	s.mu.Unlock()
	return mx
}

// Handler serves the page, its assets and the event stream.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.servePage)
	mux.HandleFunc("GET /events", s.serveEvents)
	mux.HandleFunc("GET /why", s.serveWhy)
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

// The page may load only its own script and style, connect and submit its
// (GET) port form only back to this server, and be framed by nobody.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

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

// pageData is what page.html gets.
type pageData struct {
	View template.HTML // the rendered fragment, escaped when it was rendered
	Port uint16        // the matrix's TCP port
}

func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	port, err := parsePort(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	view, _ := s.current(port)
	s.write(w, http.StatusOK, "page.html", pageData{View: template.HTML(view), Port: port})
}

// whyData is what why.html gets: the answer, or why there is none.
type whyData struct {
	Req  client.WhyRequest
	Ans  *client.WhyAnswer
	Err  string
	Back string // the page with the matrix this question came from
}

// serveWhy explains one flow as `calicoctl why` does, from the model the
// matrix was drawn from.
func (s *Server) serveWhy(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	m := s.model
	s.mu.Unlock()
	d := whyData{Back: "./"}
	req, err := whyRequest(r, m)
	if err == nil {
		d.Req = req
		if req.Proto != "icmp" {
			d.Back = "./?port=" + strconv.Itoa(int(req.Port))
		}
		d.Ans, err = m.Why(req)
	}
	status := http.StatusOK
	if err != nil {
		d.Err, status = err.Error(), http.StatusBadRequest
	}
	s.write(w, status, "why.html", d)
}

// write renders a whole page: into a buffer first, so a failure is a 500
// and not half a page.
func (s *Server) write(w http.ResponseWriter, status int, name string, data any) {
	var b bytes.Buffer
	if err := page.ExecuteTemplate(&b, name, data); err != nil {
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		s.opts.Log.Error("rendering the page failed", "page", name, "err", err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// serveEvents streams the view: the current one at once (the page may be
// older than the stream), then each new one as it is rendered.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	port, err := parsePort(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
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
	var sent []byte
	for {
		view, changed := s.current(port)
		// A change elsewhere (another port's matrix, a record the page
		// does not show) wakes every stream; send only what differs.
		if !bytes.Equal(view, sent) {
			if _, err := w.Write(event("view", view)); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
			sent = view
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
