package bench

import (
	"fmt"
	"strings"
)

// ScaleModel is the datastore load model: constants measured at the
// largest size, and what they make of larger clusters on paper.
type ScaleModel struct {
	MeasuredAt int `json:"measuredAt"` // hosts (and watchers) of the size the constants come from
	// etcd CPU per write with no watcher and per event sent, bytes per
	// event, and an agent's CPU per event it receives and ignores (the
	// fan-out burst).
	BaseWriteUs     float64 `json:"baseWriteUs"`
	PerEventUs      float64 `json:"perEventUs"`
	BytesPerEvent   float64 `json:"bytesPerEvent"`
	AgentPerEventUs float64 `json:"agentPerEventUs"`
	// A new workload: the writes every agent is sent (its records), and the
	// writes it causes per host beyond those (status records; about 0 since
	// route counts wait for the heartbeat, 1.05 before); CPU of the agent
	// on its host and of every other agent.
	FanOutWritesPerWl     float64 `json:"fanOutWritesPerWorkload"`
	StatusWritesPerWlHost float64 `json:"statusWritesPerWorkloadPerHost"`
	HostAgentMsPerWl      float64 `json:"hostAgentMsPerWorkload"`
	ElsewhereAgentMsPerW  float64 `json:"elsewhereAgentMsPerWorkload"`
	// Status heartbeats: writes per host per second, and events each
	// costs (0 when no agent watches status records).
	HeartbeatsPerHostSec float64 `json:"heartbeatsPerHostSec"`
	EventsPerHeartbeat   float64 `json:"eventsPerHeartbeat"`
	// KeysPerHost and ListBytesPerHost: what an agent lists at start, per
	// host in the cluster.
	KeysPerHost      float64          `json:"keysPerHost"`
	ListBytesPerHost float64          `json:"listBytesPerHost"`
	Projections      []LoadProjection `json:"projections"`
}

// LoadProjection is the model at one cluster size, every agent watching
// etcd directly, with one new workload per host per minute.
type LoadProjection struct {
	Hosts          int     `json:"hosts"`
	WritesPerSec   float64 `json:"writesPerSec"`
	EventsPerSec   float64 `json:"eventsPerSec"`
	EtcdCPUPercent float64 `json:"etcdCpuPercent"` // of one CPU
	SentMBPerSec   float64 `json:"sentMBPerSec"`
	// AgentCPUPercent: what the churn costs each agent.
	AgentCPUPercent float64 `json:"agentCpuPercent"`
	// RestartListMB: every agent listing at once (a datastore restart).
	RestartListMB float64 `json:"restartListMB"`
}

// modelChurnPerHostPerSec is the projections' workload churn.
const modelChurnPerHostPerSec = 1.0 / 60

// ModelHosts are the sizes the model projects to.
var ModelHosts = []int{100, 1000, 5000}

// scaleModel takes the model's constants from the largest size measured.
func (r *Results) scaleModel() {
	var big *ScaleResult
	for i := range r.Scale {
		if s := &r.Scale[i]; big == nil || s.Hosts >= big.Hosts {
			big = s
		}
	}
	if big == nil || big.Etcd.PerEventUs == 0 && big.Etcd.BytesPerEvent == 0 {
		return
	}
	e, n := big.Etcd, float64(big.Hosts)
	// The writes every agent is sent: events per workload over watchers.
	// (Writes times events per write undercounts them once the status
	// heartbeats, which send no event, are most of the writes.)
	fan := 0.0
	switch {
	case e.Watchers > 0 && e.EventsPerWorkload > 0:
		fan = e.EventsPerWorkload / float64(e.Watchers)
	case e.Watchers > 0:
		fan = e.WritesPerWorkload * e.EventsPerWrite / float64(e.Watchers)
	}
	m := &ScaleModel{
		MeasuredAt: big.Hosts, BaseWriteUs: e.BaseWriteUs, PerEventUs: e.PerEventUs,
		BytesPerEvent: e.BytesPerEvent, AgentPerEventUs: e.AgentPerEventUs,
		FanOutWritesPerWl:     round(fan, 2),
		StatusWritesPerWlHost: round(max(e.WritesPerWorkload-fan, 0)/n, 3),
		HostAgentMsPerWl:      e.HostAgentMsPerWl,
		ElsewhereAgentMsPerW:  e.ElsewhereAgentMsPerW,
		HeartbeatsPerHostSec:  round(e.IdleWritesPerSec/n, 3),
		KeysPerHost:           round(float64(e.Keys)/n, 1),
		ListBytesPerHost:      round(big.ListBytes/n, 0),
	}
	if e.IdleWritesPerSec > 0 {
		m.EventsPerHeartbeat = round(e.IdleEventsPerSec/e.IdleWritesPerSec, 1)
	}
	for _, hosts := range ModelHosts {
		h := float64(hosts)
		churn := h * modelChurnPerHostPerSec
		beats := h * m.HeartbeatsPerHostSec
		// Status writes per workload grow with the hosts; heartbeat
		// events with the watchers, like every other.
		writes := churn*(m.FanOutWritesPerWl+m.StatusWritesPerWlHost*h) + beats
		events := churn*m.FanOutWritesPerWl*h + beats*m.EventsPerHeartbeat*h/n
		cpuMs := (writes*m.BaseWriteUs + events*m.PerEventUs) / 1000
		m.Projections = append(m.Projections, LoadProjection{
			Hosts: hosts, WritesPerSec: round(writes, 1), EventsPerSec: round(events, 0),
			EtcdCPUPercent: round(cpuMs/10, 1),
			SentMBPerSec:   round(events*m.BytesPerEvent/1e6, 2),
			// Its own host's workloads, and everyone else's.
			AgentCPUPercent: round((modelChurnPerHostPerSec*m.HostAgentMsPerWl+churn*m.ElsewhereAgentMsPerW)/10, 2),
			RestartListMB:   round(h*h*m.ListBytesPerHost/1e6, 0),
		})
	}
	r.ScaleModel = m
}

// mean of xs (0 for none).
func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// scaleMarkdown renders the scale section and the load model.
func scaleMarkdown(b *strings.Builder, res *Results) {
	b.WriteString("\n## Scale (namespace hosts sharing one etcd)\n\n" +
		"| mode | hosts | started | start s | converged after last start, s | new route p50 ms | p99 | max | trials | idle CPU all agents % | per agent mean % | max % | reflector % | RSS mean MB | max MB |\n" +
		"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range res.Scale {
		fmt.Fprintf(b, "| %s | %d | %d | %.1f | %.2f | %.0f | %.0f | %.0f | %d | %.2f | %.3f | %.2f | %.2f | %.1f | %.1f |\n",
			s.Mode, s.Hosts, s.Added, s.StartSeconds, s.ConvergeSeconds, s.P50Ms, s.P99Ms, s.MaxMs, len(s.PropagationMs),
			s.IdleCPUPercent, s.AgentCPUMeanPercent, s.AgentCPUMaxPercent, s.ReflectorCPUPercent, s.RSSMeanMB, s.RSSMaxMB)
	}
	b.WriteString("\nEach world grows through its sizes; \"started\" hosts are the ones added at that size, each `calicoctl node` followed by one workload " +
		"in a block of its own. Convergence runs from the return of the last `calicoctl node` until every host has a route for every host's block " +
		"(netlink events, confirmed by a route dump). In reflector mode hosts 3 and 4 are the reflectors (`calicoctl node --route-reflector`), " +
		"with `calicoctl bgp node-mesh off` and both as global peers. Agent CPU includes the nft processes it runs.\n")
	for _, s := range res.Scale {
		if s.StartRetries > 0 {
			fmt.Fprintf(b, "\n%s, %d hosts: %d `calicoctl node` calls failed and were made again.\n", s.Mode, s.Hosts, s.StartRetries)
		}
	}
	b.WriteString("\n")
	b.WriteString("| mode | hosts | etcd keys | watchers | watch streams | etcd idle CPU % | etcd RSS MB | idle writes/s | idle events/s | idle sent B/s | writes per workload | events per write | etcd ms per workload | its host's agent ms | other agents' ms each | etcd µs per write | µs per event | bytes per event | agent µs per event | agent list bytes |\n" +
		"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range res.Scale {
		e := s.Etcd
		fmt.Fprintf(b, "| %s | %d | %d | %d | %d | %.2f | %.1f | %.2f | %.1f | %.0f | %.1f | %.1f | %.2f | %.2f | %.3f | %.1f | %.2f | %.0f | %.2f | %.0f |\n",
			s.Mode, s.Hosts, e.Keys, e.Watchers, e.WatchStreams, e.IdleCPUPercent, e.RSSMB, e.IdleWritesPerSec, e.IdleEventsPerSec, e.IdleBytesPerSec,
			e.WritesPerWorkload, e.EventsPerWrite, e.CPUPerWorkloadMs, e.HostAgentMsPerWl, e.ElsewhereAgentMsPerW, e.BaseWriteUs, e.PerEventUs, e.BytesPerEvent, e.AgentPerEventUs, s.ListBytes)
	}
	fmt.Fprintf(b, "\nWrites, events and CPU per workload are over the new-block trials (heartbeats at the idle rate taken out of the writes). "+
		"The columns from \"etcd µs per write\" to \"agent µs per event\" come from the fan-out burst: %d writes to a key every agent watches "+
		"(and ignores) against %d to a key no one watches; the differences in etcd's CPU, bytes sent and the agents' CPU, per event sent.\n", fanOutWrites, fanOutWrites)
	m := res.ScaleModel
	if m == nil {
		return
	}
	fmt.Fprintf(b, "\n### Datastore load model\n\nConstants at %d hosts: etcd %.1f µs per write with no watcher, %.2f µs and %.0f bytes per event sent; "+
		"an agent %.2f µs per event it ignores; a new workload is %.2f writes sent to every agent plus %.3f status writes per host, %.2f ms of CPU on its host's agent and %.3f ms on every other; "+
		"%.3f status heartbeats per host per second, %.1f events each; an agent lists %.1f keys (%.0f bytes) per host at start.\n\n",
		m.MeasuredAt, m.BaseWriteUs, m.PerEventUs, m.BytesPerEvent, m.AgentPerEventUs, m.FanOutWritesPerWl, m.StatusWritesPerWlHost, m.HostAgentMsPerWl, m.ElsewhereAgentMsPerW,
		m.HeartbeatsPerHostSec, m.EventsPerHeartbeat, m.KeysPerHost, m.ListBytesPerHost)
	b.WriteString("Projected with one new workload per host per minute, every agent watching etcd directly:\n\n" +
		"| hosts | writes/s | events sent/s | etcd CPU % of one CPU | sent MB/s | churn CPU per agent % | all agents listing at once, MB |\n|---|---|---|---|---|---|---|\n")
	for _, p := range m.Projections {
		fmt.Fprintf(b, "| %d | %.1f | %.0f | %.1f | %.2f | %.2f | %.0f |\n", p.Hosts, p.WritesPerSec, p.EventsPerSec, p.EtcdCPUPercent, p.SentMBPerSec, p.AgentCPUPercent, p.RestartListMB)
	}
}
