package agent

import (
	"sort"

	"github.com/hashicorp/serf/serf"

	"github.com/atomcloud/atomfed/internal/node"
)

// NodeEndpoint is an alive atomfed node as Serf knows it.
type NodeEndpoint struct {
	Name, Role, URL string
}

// RegionNodes returns the alive servers and agents of the agent's region
// with an HTTP URL (the agent itself included), sorted by name: what the
// region's metrics task scrapes.
func (a *Agent) RegionNodes() []NodeEndpoint {
	var out []NodeEndpoint
	for _, m := range a.serf.Members() {
		if m.Status != serf.StatusAlive || m.Tags[node.TagRegion] != a.cfg.Region || m.Tags[node.TagHTTP] == "" {
			continue
		}
		out = append(out, NodeEndpoint{Name: m.Name, Role: m.Tags[node.TagRole], URL: m.Tags[node.TagHTTP]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
