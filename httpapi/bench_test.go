package httpapi_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
)

// BenchmarkHTTPWritePath measures PUT /v1/tenants/{id} end to end over
// HTTPS with a bearer token: decode, validate, encode, commit through raft
// (fsynced bolt log), apply, answer. "leader" is a one-server cluster;
// "via-follower" sends to a follower of three, which forwards the command
// to the leader over the forwarding RPC. Serial runs show latency; parallel
// runs (GOMAXPROCS x 8 clients) show what group commit does. Compare runs
// with benchstat; the disk makes single runs noisy.
func BenchmarkHTTPWritePath(b *testing.B) {
	label := strings.Repeat("x", 256)
	for _, setup := range []struct {
		name    string
		servers int
	}{{"leader", 1}, {"via-follower", 3}} {
		b.Run(setup.name, func(b *testing.B) {
			c := testcluster.New(b, testcluster.Options{Servers: setup.servers})
			target := c.WaitLeader()
			if setup.servers > 1 {
				target = c.Followers()[0]
			}
			c.RegisterRegion(&fsm.Region{Name: "home", URL: "https://home.example:8443", Tier: fsm.TierStaging})
			var seq atomic.Int64
			put := func(ctx context.Context) error {
				n := seq.Add(1)
				id := fmt.Sprintf("t-%05d", n%10000)
				_, err := target.Client.PutTenant(ctx, &fsm.Tenant{ID: id, HomeRegion: "home", Labels: map[string]string{"v": label}}, nil)
				return err
			}
			b.Run("serial", func(b *testing.B) {
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					if err := put(ctx); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.SetParallelism(8)
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					ctx := context.Background()
					for pb.Next() {
						if err := put(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}
