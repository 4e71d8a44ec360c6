package cluster_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
)

// TestSnapshotSaveRestore saves a snapshot from cluster A and restores it
// into a fresh cluster B: B then holds A's regions, tenants and audit head
// on every node, and keeps taking writes at higher indexes. Corrupt
// archives are refused with 400 bad_snapshot and change nothing, before
// and after the good restore.
func TestSnapshotSaveRestore(t *testing.T) {
	a := testcluster.New(t, testcluster.Options{})
	la := a.WaitLeader()
	for _, r := range []string{"us-east", "eu-west", "ap-south"} {
		putRegion(t, la, region(r))
	}
	for _, x := range []string{"acme", "globex", "initech"} {
		putTenant(t, la, tenant(x, "us-east", "ap-south"))
	}
	putTenant(t, la, tenant("acme", "eu-west"))
	ctx := testcluster.Ctx(t, time.Minute)
	if err := la.Client.DeleteTenant(ctx, "globex", nil); err != nil {
		t.Fatalf("delete: %v", err)
	}
	a.Settle() // each region's probe task is created asynchronously
	var archive bytes.Buffer
	retry(t, "save snapshot", func() error {
		archive.Reset()
		_, err := a.Followers()[0].Client.SnapshotSave(ctx, &archive) // forwarded to the leader
		return err
	})
	want := mustView(t, la, "linearizable")
	a.Shutdown() // A's work is done; free the CPU for B

	b := testcluster.New(t, testcluster.Options{})
	putRegion(t, b.WaitLeader(), region("b-only"))
	b.Settle()
	refuseCorrupt(t, b, archive.Bytes())

	bf := b.Followers()[0]
	retry(t, "restore snapshot", func() error {
		m, err := bf.Client.SnapshotRestore(ctx, bytes.NewReader(archive.Bytes())) // forwarded
		if err == nil && m.AuditHead != want.Head {
			return fmt.Errorf("restore answered audit head %s, want %s", m.AuditHead, want.Head)
		}
		return err
	})
	// B holds A's regions and tenants; its audit chain goes on from A's
	// head, and the restore itself is on it: the scheduler's refence of
	// A's tasks (their generations must pass what agents saw).
	b.Settle()
	got := mustView(t, b.WaitLeader(), "linearizable")
	if !reflect.DeepEqual(got.Regions, want.Regions) || !reflect.DeepEqual(got.Tenants, want.Tenants) || got.Index <= want.Index {
		t.Fatalf("B after restore holds %v, want A's %v and a later index", got, want)
	}
	audit, err := b.WaitLeader().Client.Audit(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	refenced := false
	for _, e := range audit.Recent {
		refenced = refenced || e.Type == "tasks_refence" && e.Index > want.Index
	}
	if !refenced {
		t.Fatalf("no tasks_refence after the restore in the audit chain: %+v", audit.Recent)
	}
	for _, n := range b.Running() {
		waitView(t, n, got)
	}
	refuseCorrupt(t, b, archive.Bytes())

	added := putTenant(t, bf, tenant("after-restore", "eu-west"))
	if added.ModifyIndex <= want.Index {
		t.Fatalf("first write after restore at index %d, not past A's %d", added.ModifyIndex, want.Index)
	}
}

// refuseCorrupt uploads damaged versions of good to every node of c and
// checks that each is refused with 400 bad_snapshot and that no node's
// state moved.
func refuseCorrupt(t *testing.T, c *testcluster.Cluster, good []byte) {
	t.Helper()
	before := mustView(t, c.WaitLeader(), "linearizable")
	for _, n := range c.Running() {
		waitView(t, n, before)
	}
	for name, bad := range corruptions(t, good) {
		n := c.Running()[len(name)%len(c.Running())] // leader or follower
		var err error
		retry(t, "upload "+name, func() error {
			_, err = n.Client.SnapshotRestore(testcluster.Ctx(t, 30*time.Second), bytes.NewReader(bad))
			if retryable(err) {
				return err
			}
			return nil
		})
		if client.StatusOf(err) != 400 || !client.IsCode(err, "bad_snapshot") {
			t.Errorf("%s uploaded to %s: %v, want 400 bad_snapshot", name, n.ID, err)
		}
	}
	for _, n := range c.Running() {
		if got := mustView(t, n, "stale"); !reflect.DeepEqual(got, before) {
			t.Errorf("%s: corrupt uploads changed the state from %v to %v", n.ID, before, got)
		}
	}
}

// corruptions returns damaged copies of a good archive, by name.
func corruptions(t *testing.T, good []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x55
		return b
	}
	// gzip's 10-byte header holds a timestamp and OS byte that nothing
	// checks; every byte after it must matter.
	for k := 0; k < 8; k++ {
		i := 10 + k*(len(good)-10)/8
		out[fmt.Sprintf("byte %d flipped", i)] = flip(i)
	}
	out["gzip CRC flipped"] = flip(len(good) - 6)
	out["gzip size flipped"] = flip(len(good) - 1)
	out["truncated to half"] = good[:len(good)/2]
	out["truncated trailer"] = good[:len(good)-4]
	out["empty"] = []byte{}
	out["trailing garbage"] = append(bytes.Clone(good), "garbage"...)
	rnd := make([]byte, len(good))
	r := rand.New(rand.NewPCG(1, 2))
	for i := range rnd {
		rnd[i] = byte(r.UintN(256))
	}
	out["random bytes"] = rnd
	out["random gzip body"] = append([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}, rnd...)

	files := untar(t, good)
	wrongSum := clone(files)
	wrongSum["SHA256SUMS"] = []byte(strings.Replace(string(files["SHA256SUMS"]), shaHex(files["state.bin"]), shaHex([]byte("other")), 1))
	out["wrong checksum"] = retar(t, wrongSum)

	tampered := clone(files)
	tampered["state.bin"] = bytes.Replace(files["state.bin"], []byte(`"name":"us-east"`), []byte(`"name":"US_EAST"`), 1)
	if bytes.Equal(tampered["state.bin"], files["state.bin"]) {
		t.Fatalf("state.bin has no region us-east to tamper with")
	}
	fixSums(tampered)
	out["invalid state with valid checksums"] = retar(t, tampered)

	extra := clone(files)
	extra["evil.sh"] = []byte("#!/bin/sh\n")
	out["extra member"] = retar(t, extra)

	missing := clone(files)
	delete(missing, "meta.json")
	out["missing meta"] = retar(t, missing)
	return out
}

func untar(t *testing.T, archive []byte) map[string][]byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatalf("good archive is not gzip: %v", err)
	}
	tr := tar.NewReader(gz)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("good archive: %v", err)
		}
		if files[h.Name], err = io.ReadAll(tr); err != nil {
			t.Fatalf("good archive: %v", err)
		}
	}
}

func retar(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, name := range []string{"meta.json", "state.bin", "SHA256SUMS", "evil.sh"} {
		data, ok := files[name]
		if !ok {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func clone(files map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(files))
	for k, v := range files {
		out[k] = bytes.Clone(v)
	}
	return out
}

func fixSums(files map[string][]byte) {
	files["SHA256SUMS"] = []byte(fmt.Sprintf("%s  meta.json\n%s  state.bin\n", shaHex(files["meta.json"]), shaHex(files["state.bin"])))
}

func shaHex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
