package raftlog

import (
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// BenchmarkAppend appends entries of 256-byte commands, batch at a time,
// each append durable, to this store and to raft-boltdb with atomfed's
// bolt options: the cost of the log write a raft round waits for.
func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 16} {
		stores := map[string]func(dir string) (raft.LogStore, func()){
			"segment": func(dir string) (raft.LogStore, func()) {
				s, err := Open(dir, Options{})
				if err != nil {
					b.Fatal(err)
				}
				return s, func() { s.Close() }
			},
			"segment-nozero": func(dir string) (raft.LogStore, func()) {
				s, err := Open(dir, Options{NoZeroFill: true})
				if err != nil {
					b.Fatal(err)
				}
				return s, func() { s.Close() }
			},
			"boltdb": func(dir string) (raft.LogStore, func()) {
				s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db"),
					BoltOptions: &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType}})
				if err != nil {
					b.Fatal(err)
				}
				return s, func() { s.Close() }
			},
		}
		for _, name := range []string{"segment", "segment-nozero", "boltdb"} {
			b.Run(name+"/batch="+string(rune('0'+batch/10))+string(rune('0'+batch%10)), func(b *testing.B) {
				s, done := stores[name](b.TempDir())
				defer done()
				data := make([]byte, 256)
				logs := make([]*raft.Log, batch)
				idx := uint64(1)
				b.SetBytes(int64(256 * batch))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					for j := range logs {
						logs[j] = &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}
						idx++
					}
					if err := s.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
