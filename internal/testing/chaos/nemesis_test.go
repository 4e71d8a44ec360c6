package chaos

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestChooseNemesisReplaysFromSeed: the same seed gives the same events,
// the first round covers every nemesis once, and later events mix a
// network fault with a process fault some of the time.
func TestChooseNemesisReplaysFromSeed(t *testing.T) {
	seq := func(seed uint64) []string {
		r := &runner{rng: rand.New(rand.NewPCG(seed, 0x63686173))}
		var out []string
		for i := 0; i < 60; i++ {
			out = append(out, r.chooseNemesis(Nemeses, 25))
		}
		return out
	}
	a, b := seq(42), seq(42)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("seed 42 gave two sequences:\n%v\n%v", a, b)
	}
	if reflect.DeepEqual(a, seq(43)) {
		t.Fatal("seeds 42 and 43 gave the same sequence")
	}
	first := append([]string(nil), a[:len(Nemeses)]...)
	sort.Strings(first)
	want := append([]string(nil), Nemeses...)
	sort.Strings(want)
	if !reflect.DeepEqual(first, want) {
		t.Fatalf("first round %v does not cover every nemesis once", a[:len(Nemeses)])
	}
	mixed := 0
	for _, n := range a[len(Nemeses):] {
		if parts := strings.Split(n, "+"); len(parts) == 2 {
			mixed++
			if !slices.Contains(mixNetwork, parts[0]) || !slices.Contains(mixProcess, parts[1]) {
				t.Errorf("mix %q is not a network fault plus a process fault", n)
			}
		}
	}
	if mixed == 0 {
		t.Error("no mixed event in 49 random choices with a 25% chance each")
	}
}
