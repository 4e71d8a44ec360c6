package cluster

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/hashicorp/serf/coordinate"
	"github.com/hashicorp/serf/serf"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/node"
	"github.com/atomcloud/atomfed/internal/structs"
)

type memberCoord struct {
	name, region, role string
	c                  *coordinate.Coordinate
}

// memberCoords returns the coordinate of every alive member that has one.
func (s *Server) memberCoords() []memberCoord {
	var out []memberCoord
	for _, m := range s.serf.Members() {
		if m.Status != serf.StatusAlive {
			continue
		}
		var c *coordinate.Coordinate
		if m.Name == s.cfg.NodeID {
			c, _ = s.serf.GetCoordinate()
		} else if cc, ok := s.serf.GetCachedCoordinate(m.Name); ok {
			c = cc
		}
		if c == nil {
			continue
		}
		out = append(out, memberCoord{name: m.Name, region: m.Tags[node.TagRegion], role: m.Tags[node.TagRole], c: c})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// Coordinates returns every alive member's Serf coordinate.
func (s *Server) Coordinates() []structs.Coordinate {
	mc := s.memberCoords()
	out := make([]structs.Coordinate, 0, len(mc))
	for _, m := range mc {
		out = append(out, structs.Coordinate{Node: m.name, Role: m.role, Region: m.region,
			Vec: m.c.Vec, Error: m.c.Error, Adjustment: m.c.Adjustment, Height: m.c.Height})
	}
	return out
}

// NearestRegions ranks the registered regions by estimated RTT from a node
// or a region (from), using the closest pair of nodes for each region.
// Regions with no coordinate yet come last with RTT -1.
func (s *Server) NearestRegions(from string) ([]structs.RegionRTT, error) {
	mc := s.memberCoords()
	var src []memberCoord
	for _, m := range mc {
		if m.name == from {
			src = []memberCoord{m}
			break
		}
	}
	if src == nil {
		for _, m := range mc {
			if m.region == from {
				src = append(src, m)
			}
		}
	}
	if src == nil {
		return nil, fmt.Errorf("%w: %q is neither a node nor a region with a known coordinate", fsm.ErrNotFound, from)
	}
	var regions []string
	s.fsm.Read(func(st *fsm.State) {
		for _, r := range st.SortedRegions() {
			regions = append(regions, r.Name)
		}
	})
	out := make([]structs.RegionRTT, 0, len(regions))
	for _, r := range regions {
		best := structs.RegionRTT{Region: r, RTTMillis: -1}
		for _, a := range src {
			for _, b := range mc {
				if b.region != r || !a.c.IsCompatibleWith(b.c) {
					continue
				}
				d := 0.0
				if a.name != b.name {
					d = float64(a.c.DistanceTo(b.c)) / float64(time.Millisecond)
				}
				if best.RTTMillis < 0 || d < best.RTTMillis {
					best.RTTMillis, best.From, best.To = math.Round(d*1000)/1000, a.name, b.name
				}
			}
		}
		out = append(out, best)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].RTTMillis, out[j].RTTMillis
		if (a < 0) != (b < 0) {
			return b < 0
		}
		return a < b
	})
	return out, nil
}
