package metrics

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protodelim"
)

// SnapshotFormat is the content type of a pushed snapshot (sent with
// Content-Encoding: gzip): Prometheus' delimited protobuf, the format
// client_golang and Prometheus' /federate speak.
const SnapshotFormat = expfmt.FmtProtoDelim

// RegionLabel is the label every series of the global view carries;
// ExportedRegionLabel keeps a region label a series already had with
// another value (Prometheus' exported_ convention).
const (
	RegionLabel         = "region"
	ExportedRegionLabel = "exported_region"
)

// reservedPrefix names the families a server adds to every answer; a
// snapshot may not carry them.
const reservedPrefix = "atomfed_region_scrape_"

// Limits bound what a server accepts and keeps per region.
type Limits struct {
	// MaxCompressedBytes bounds a pushed snapshot as sent and as kept.
	MaxCompressedBytes int64
	// MaxDecodedBytes bounds a snapshot once decompressed (gzip bombs).
	MaxDecodedBytes int64
	// MaxFamilyBytes bounds one encoded metric family.
	MaxFamilyBytes int64
	// MaxSeries bounds the series of one snapshot.
	MaxSeries int
	// MaxLabels bounds the labels of one series.
	MaxLabels int
}

// DefaultLimits are the servers' limits: 32 MiB compressed, 512 MiB
// decoded, 1,000,000 series per region, 64 labels per series.
func DefaultLimits() Limits {
	return Limits{MaxCompressedBytes: 32 << 20, MaxDecodedBytes: 512 << 20, MaxFamilyBytes: 64 << 20, MaxSeries: 1_000_000, MaxLabels: 64}
}

// ErrBadSnapshot is a snapshot a server refuses; the message says why.
var ErrBadSnapshot = errors.New("bad metrics snapshot")

// Encode writes families (any order; each name once) as a snapshot:
// sorted by name, delimited protobuf, gzip-compressed.
func Encode(w io.Writer, fams []*dto.MetricFamily) error {
	sort.Slice(fams, func(i, j int) bool { return fams[i].GetName() < fams[j].GetName() })
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(zw, 64<<10)
	for _, f := range fams {
		if _, err := protodelim.MarshalTo(bw, f); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return zw.Close()
}

// familyReader decodes a snapshot one family at a time, within limits.
type familyReader struct {
	zr   *gzip.Reader
	br   *bufio.Reader
	opts protodelim.UnmarshalOptions
	lim  *limitedReader
}

type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("%w: over the decoded size limit", ErrBadSnapshot)
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

func newFamilyReader(data []byte, lim Limits) (*familyReader, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: not gzip: %v", ErrBadSnapshot, err)
	}
	zr.Multistream(false)
	l := &limitedReader{r: zr, n: lim.MaxDecodedBytes}
	return &familyReader{zr: zr, br: bufio.NewReaderSize(l, 32<<10), lim: l,
		opts: protodelim.UnmarshalOptions{MaxSize: lim.MaxFamilyBytes}}, nil
}

// next decodes the next family into f; io.EOF at the clean end.
func (r *familyReader) next(f *dto.MetricFamily) error {
	if _, err := r.br.Peek(1); err == io.EOF {
		return io.EOF
	}
	if err := r.opts.UnmarshalFrom(r.br, f); err != nil {
		if errors.Is(err, ErrBadSnapshot) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	return nil
}

// Info is what a server learns of a snapshot by reading it through.
type Info struct {
	Families int `json:"families"`
	Series   int `json:"series"`
	// Sum is the region's summary for /global-status.
	Sum Summary `json:"-"`
}

// Inspect reads a pushed snapshot through and checks it: gzip within the
// limits, families in strictly increasing name order with valid names and
// no reserved name (atomfed_region_scrape_*), each series with valid,
// distinct label names, its value of its family's type, and the label
// region=region.
func Inspect(data []byte, region string, lim Limits) (Info, error) {
	var info Info
	if int64(len(data)) > lim.MaxCompressedBytes {
		return info, fmt.Errorf("%w: %d bytes compressed, the limit is %d", ErrBadSnapshot, len(data), lim.MaxCompressedBytes)
	}
	r, err := newFamilyReader(data, lim)
	if err != nil {
		return info, err
	}
	prev := ""
	for {
		var f dto.MetricFamily
		err := r.next(&f)
		if err == io.EOF {
			return info, nil
		}
		if err != nil {
			return info, err
		}
		name := f.GetName()
		if err := checkFamily(&f, prev, region, lim); err != nil {
			return info, err
		}
		prev = name
		info.Sum.add(&f, region)
		info.Families++
		info.Series += len(f.Metric)
		if info.Series > lim.MaxSeries {
			return info, fmt.Errorf("%w: over %d series", ErrBadSnapshot, lim.MaxSeries)
		}
	}
}

func checkFamily(f *dto.MetricFamily, prev, region string, lim Limits) error {
	name := f.GetName()
	switch {
	case !model.LegacyValidation.IsValidMetricName(name):
		return fmt.Errorf("%w: invalid metric name %q", ErrBadSnapshot, name)
	case name <= prev:
		return fmt.Errorf("%w: family %q after %q: families must be sorted by name, each once", ErrBadSnapshot, name, prev)
	case strings.HasPrefix(name, reservedPrefix):
		return fmt.Errorf("%w: family %q is reserved for the servers", ErrBadSnapshot, name)
	}
	for _, m := range f.Metric {
		if m == nil {
			return fmt.Errorf("%w: %s: empty series", ErrBadSnapshot, name)
		}
		if !hasValue(f.GetType(), m) {
			return fmt.Errorf("%w: %s: a series without a %s value", ErrBadSnapshot, name, f.GetType())
		}
		if len(m.Label) > lim.MaxLabels {
			return fmt.Errorf("%w: %s: a series with %d labels, at most %d", ErrBadSnapshot, name, len(m.Label), lim.MaxLabels)
		}
		seen := make(map[string]bool, len(m.Label))
		regionOK := false
		for _, l := range m.Label {
			ln := l.GetName()
			if l == nil || !model.LegacyValidation.IsValidLabelName(ln) || seen[ln] || !model.LabelValue(l.GetValue()).IsValid() {
				return fmt.Errorf("%w: %s: invalid or repeated label %q", ErrBadSnapshot, name, ln)
			}
			seen[ln] = true
			if ln == RegionLabel {
				if l.GetValue() != region {
					return fmt.Errorf("%w: %s: a series of region %q in a snapshot of region %q", ErrForeignRegion, name, l.GetValue(), region)
				}
				regionOK = true
			}
		}
		if !regionOK {
			return fmt.Errorf("%w: %s: a series without the label region=%q", ErrBadSnapshot, name, region)
		}
	}
	return nil
}

// ErrForeignRegion is a snapshot carrying another region's series.
var ErrForeignRegion = fmt.Errorf("%w: foreign region", ErrBadSnapshot)

func hasValue(t dto.MetricType, m *dto.Metric) bool {
	switch t {
	case dto.MetricType_COUNTER:
		return m.Counter != nil
	case dto.MetricType_GAUGE:
		return m.Gauge != nil
	case dto.MetricType_UNTYPED:
		return m.Untyped != nil
	case dto.MetricType_SUMMARY:
		return m.Summary != nil
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return m.Histogram != nil
	}
	return false
}
