// Package image builds the atomfed container image without a daemon or a
// registry: one layer (the static binary, a passwd and group naming the
// non-root user, its state directories, the CA roots) on an empty base,
// with OCI media types, written as an OCI archive that `docker load`,
// `podman load`, `skopeo` and `kind load image-archive` take (WriteArchive). The
// build is reproducible: the same binary and options give the same digest.
// deploy/Dockerfile produces the same layout with Docker.
package image

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's layout; deploy/Dockerfile must match it (a test checks).
const (
	BinaryPath = "/usr/local/bin/atomfed"
	// User is the non-root user and group the image runs as (the
	// distroless "nonroot" ids; the Helm chart's securityContext).
	User     = "65532:65532"
	UID, GID = 65532, 65532
	Home     = "/home/nonroot"
	CAPath   = "/etc/ssl/certs/ca-certificates.crt"
	// DefaultRepository is the image's name; its tag is the Helm chart's
	// appVersion (the chart's default image).
	DefaultRepository = "ghcr.io/atomcloud/atomfed"
)

// StateDirs are the directories a server and an agent write to (their
// --data-dir defaults in the chart), owned by the user.
var StateDirs = []string{"/var/lib/atomfed", "/var/lib/atomfed-agent"}

// Passwd and Group are the image's /etc/passwd and /etc/group: no login
// shell (the image has none).
const (
	Passwd = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	Group  = "root:x:0:\nnonroot:x:65532:\n"
)

// Options are what goes into the image.
type Options struct {
	// Binary is a statically linked atomfed (CGO_ENABLED=0).
	Binary string
	// Version and Revision label the image (org.opencontainers.image.*).
	Version, Revision string
	// CABundle is copied to /etc/ssl/certs/ca-certificates.crt, for the
	// TLS connections atomfed makes to Vault, object stores and regions
	// with public certificates; "" leaves it out.
	CABundle string
	// Created is the image's and its files' time (reproducible builds:
	// SOURCE_DATE_EPOCH); zero is the Unix epoch.
	Created time.Time
}

// Build makes the image.
func Build(o Options) (v1.Image, error) {
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, err
	}
	if err := checkStatic(o.Binary); err != nil {
		return nil, err
	}
	var ca []byte
	if o.CABundle != "" {
		if ca, err = os.ReadFile(o.CABundle); err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
	}
	created := o.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC()
	layerTar, err := layer(bin, ca, created)
	if err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: types.OCILayer, History: v1.History{
		Created: v1.Time{Time: created}, CreatedBy: "atomfed deploy/image: static atomfed binary, non-root user, no shell",
	}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	if a, err := elfArch(o.Binary); err == nil {
		cf.Architecture = a
	}
	cf.Created = v1.Time{Time: created}
	cf.Config = v1.Config{
		User:         User,
		Entrypoint:   []string{BinaryPath},
		Cmd:          []string{"--help"},
		WorkingDir:   Home,
		Env:          []string{"PATH=/usr/local/bin", "HOME=" + Home},
		ExposedPorts: map[string]struct{}{"8401/tcp": {}, "8300/tcp": {}, "8301/tcp": {}, "8301/udp": {}},
		Labels: map[string]string{
			"org.opencontainers.image.title":    "atomfed",
			"org.opencontainers.image.source":   "https://github.com/atomcloud/atomfed",
			"org.opencontainers.image.version":  o.Version,
			"org.opencontainers.image.revision": o.Revision,
		},
		StopSignal: "SIGTERM",
	}
	return mutate.ConfigFile(img, cf)
}

type entry struct {
	name     string
	mode     int64
	uid, gid int
	body     []byte
	dir      bool
}

// layer is the image's one layer, as a tar with fixed times and owners.
func layer(bin, ca []byte, created time.Time) ([]byte, error) {
	entries := []entry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, body: []byte(Group)},
		{name: "etc/passwd", mode: 0o644, body: []byte(Passwd)},
	}
	if ca != nil {
		entries = append(entries,
			entry{name: "etc/ssl/", mode: 0o755, dir: true},
			entry{name: "etc/ssl/certs/", mode: 0o755, dir: true},
			entry{name: CAPath[1:], mode: 0o644, body: ca})
	}
	entries = append(entries,
		entry{name: "home/", mode: 0o755, dir: true},
		entry{name: Home[1:] + "/", mode: 0o700, uid: UID, gid: GID, dir: true},
		entry{name: "tmp/", mode: 0o1777, dir: true},
		entry{name: "usr/", mode: 0o755, dir: true},
		entry{name: "usr/local/", mode: 0o755, dir: true},
		entry{name: "usr/local/bin/", mode: 0o755, dir: true},
		entry{name: BinaryPath[1:], mode: 0o755, body: bin},
		entry{name: "var/", mode: 0o755, dir: true},
		entry{name: "var/lib/", mode: 0o755, dir: true},
	)
	for _, d := range StateDirs {
		entries = append(entries, entry{name: d[1:] + "/", mode: 0o700, uid: UID, gid: GID, dir: true})
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: created, Format: tar.FormatPAX}
		if e.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if !e.dir {
			if _, err := tw.Write(e.body); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// checkStatic refuses a dynamically linked binary: the image has no C
// library or loader.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not an ELF binary: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New(path + " is dynamically linked, and the image has no C library: build it with CGO_ENABLED=0")
		}
	}
	return nil
}

func elfArch(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	}
	return "", fmt.Errorf("unknown machine %s", f.Machine)
}
