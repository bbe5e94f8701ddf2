package api

import "time"

// StatusStale is how long a node may go without reporting before it is
// called down: agents rewrite their status at least every 10 s (the agent's
// StatusInterval), so several missed reports mean the agent is gone.
const StatusStale = 45 * time.Second

// State says how a node's agent is doing, judged at now from its last
// report: down (no report for StatusStale, or an unreadable time), starting,
// ready (with problems), or ready. calicoctl status and the web view both
// show it, so they never disagree.
func (st NodeStatus) State(now time.Time) string {
	t, err := time.Parse(time.RFC3339, st.Updated)
	if err != nil || now.Sub(t) > StatusStale {
		return "down"
	}
	if !st.Ready {
		return "starting"
	}
	if len(st.Problems) > 0 {
		return "ready (with problems)"
	}
	return "ready"
}
