package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// etcd metric names the scale section reads (etcd 3.6).
const (
	mRevision     = "etcd_debugging_mvcc_current_revision"
	mKeys         = "etcd_debugging_mvcc_keys_total"
	mWatchers     = "etcd_debugging_mvcc_watcher_total"
	mWatchStreams = "etcd_debugging_mvcc_watch_stream_total"
	mEvents       = "etcd_debugging_mvcc_events_total"          // events sent to watchers
	mSentBytes    = "etcd_network_client_grpc_sent_bytes_total" // to all clients
	mRPCs         = "grpc_server_started_total"                 // RPCs (and streams) begun
)

// metrics is one scrape: each metric's value summed over its label sets.
type metrics map[string]float64

func (m metrics) get(name string) float64 { return m[name] }

// etcdMetrics scrapes the world's etcd /metrics from inside host 1, where
// its client address is.
func (w *world) etcdMetrics(ctx context.Context) (metrics, error) {
	dial := dialIn(w.Hosts[0].Netns)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) },
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.Etcd+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: etcd metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: etcd metrics: %s", resp.Status)
	}
	m := metrics{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// name{labels} value, or name value.
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		name := line[:sp]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		m[name] += v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("bench: etcd metrics: %w", err)
	}
	for _, want := range []string{mRevision, mKeys, mWatchers, mEvents, mSentBytes} {
		if _, ok := m[want]; !ok {
			return nil, fmt.Errorf("bench: etcd /metrics has no %s", want)
		}
	}
	return m, nil
}
