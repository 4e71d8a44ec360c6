// Package wire holds the JSON bodies of the HTTP API that carry FSM state:
// region views, the lists the endpoints answer, status answers, the trust
// bundle, tokens, and the request bodies the Go client sends. The server
// (httpapi) encodes them and its Go client (httpapi/client) decodes them,
// so a field cannot exist on one side only: the client once had a copy of
// the region view that lacked the database the server sent.
//
// The bodies that need no FSM type and that the cluster also produces
// (Peer, Member, Health, LeaderInfo, ArchiveMeta, ErrorBody, PolicyStatus)
// live in internal/structs instead: that package is a leaf that imports
// nothing of atomfed, and the ones here embed fsm types. This package
// imports fsm and internal/structs only, never the server or the client.
//
// The JSON names are the API (docs/api.md): renaming a tag changes what
// every client sees.
package wire

import (
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// RegionView is a region with its derived health, as GET /v1/regions and
// GET /v1/regions/{name} answer it.
type RegionView struct {
	fsm.Region
	Health fsm.RegionHealth `json:"health"`
	// Database is the region's PostgreSQL endpoint as its agents report it
	// (host, port, database; never a credential).
	Database *fsm.DatabaseEndpoint `json:"database,omitempty"`
}

// RegionList answers GET /region/list and GET /v1/regions.
type RegionList struct {
	Regions []RegionView `json:"regions"`
}

// AnonymousRegion is a region as GET /region/list shows it to a caller
// without a token (httpapi.Config.AnonymousRegionList): what a catalog
// shows, nothing about its database, labels, location, agents or probe.
type AnonymousRegion struct {
	Name   string `json:"name"`
	URL    string `json:"url"`
	Tier   string `json:"tier"`
	Status string `json:"status"`
	Health struct {
		Status string `json:"status"`
	} `json:"health"`
}

// AnonymousRegionList answers GET /region/list without a token.
type AnonymousRegionList struct {
	Regions []AnonymousRegion `json:"regions"`
}

// TenantList answers GET /v1/tenants.
type TenantList struct {
	Tenants []*fsm.Tenant `json:"tenants"`
}

// DeleteResponse answers a successful DELETE.
type DeleteResponse struct {
	Deleted string `json:"deleted"`
	Name    string `json:"name"`
	Index   uint64 `json:"index"`
}

// AgentList answers GET /v1/agents.
type AgentList struct {
	Agents []*fsm.Agent `json:"agents"`
}

// TaskList answers GET /v1/tasks and GET /v1/agents/{node}/tasks.
type TaskList struct {
	Tasks []*fsm.Task `json:"tasks"`
}

// NearestRegions answers GET /v1/regions/nearest.
type NearestRegions struct {
	From    string              `json:"from"`
	Regions []structs.RegionRTT `json:"regions"`
}

// GlobalTableList answers GET /v1/global-tables.
type GlobalTableList struct {
	Tables []*fsm.GlobalTable `json:"global_tables"`
}

// GlobalTableStatus answers GET /v1/global-tables/{name}: the table and
// its federation sync state in every region.
type GlobalTableStatus struct {
	*fsm.GlobalTable
	Sync fsm.GlobalTableView `json:"sync"`
}

// DatabaseReport is the body of PUT /v1/regions/{name}/database: an
// agent's report of its region's database endpoint, signed with the
// agent's key (the signed envelope is added to it).
type DatabaseReport struct {
	Endpoint fsm.DatabaseEndpoint `json:"endpoint"`
	Node     string               `json:"node"`
}

// Route answers GET /v1/route: where a tenant's request of one operation
// goes, from where, under which staleness budget (routing.Decide).
type Route struct {
	Tenant string `json:"tenant"`
	Op     string `json:"op"`
	// From is what the ranking measured from: a region name, or
	// "lat,lon"; without ?from, the answering server's region.
	From           string `json:"from"`
	MaxStalenessMS int64  `json:"max_staleness_ms"`
	HomeRegion     string `json:"home_region"`
	// Epoch is the tenant's placement epoch the answer was made for: an
	// edge that sees it move knows the home changed.
	Epoch uint64 `json:"epoch"`
	RouteDecision
}

// RouteDecision is the region a request goes to and the others in order.
type RouteDecision struct {
	Region string `json:"region"`
	// AppURL is the region's application endpoint; empty when the region
	// registered none (Reason says so).
	AppURL string `json:"app_url"`
	Reason string `json:"reason"`
	// Alternatives are the other regions, best first: those that may
	// serve the request (eligible) before those that may not.
	Alternatives []RouteChoice `json:"alternatives"`
}

// RouteChoice is one region of a route's alternatives.
type RouteChoice struct {
	Region   string `json:"region"`
	AppURL   string `json:"app_url"`
	Home     bool   `json:"home"`
	Eligible bool   `json:"eligible"`
	Reason   string `json:"reason"`
	// LagMS is a mirror's last reported replication lag; absent for the
	// home and for a mirror that has reported none.
	LagMS *float64 `json:"lag_ms,omitempty"`
	// RTTMS is the estimated round trip from the caller (Serf
	// coordinates), DistanceKM the distance from its location; each
	// absent when unknown.
	RTTMS      *float64 `json:"rtt_ms,omitempty"`
	DistanceKM *float64 `json:"distance_km,omitempty"`
}
