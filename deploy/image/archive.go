package image

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// WriteArchive writes img, named ref, as an OCI image layout in a tar
// (oci-layout, index.json, blobs/sha256/...; what `skopeo copy
// oci-archive:`, `podman load` and Docker 25+ read) that also carries the
// manifest.json of `docker save` (what older `docker load`, `kind load
// image-archive` and crane's tarball reader use), as `docker save` does
// since Docker 25. The blobs are stored once, under their digests.
func WriteArchive(file, ref string, img v1.Image) (err error) {
	tag, err := parseTag(ref)
	if err != nil {
		return err
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	mdigest, err := img.Digest()
	if err != nil {
		return err
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	cdigest, err := img.ConfigName()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(file)
		}
	}()
	tw := tar.NewWriter(f)
	epoch := time.Unix(0, 0)
	put := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		n, err := io.Copy(tw, r)
		if err == nil && n != size {
			err = fmt.Errorf("%s: wrote %d bytes of %d", name, n, size)
		}
		return err
	}
	putBytes := func(name string, b []byte) error { return put(name, int64(len(b)), bytesReader(b)) }
	blob := func(h v1.Hash) string { return path.Join("blobs", h.Algorithm, h.Hex) }

	if err := putBytes("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	var layerPaths []string
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		size, err := l.Size()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		err = put(blob(d), size, rc)
		rc.Close()
		if err != nil {
			return err
		}
		layerPaths = append(layerPaths, blob(d))
	}
	if err := putBytes(blob(cdigest), config); err != nil {
		return err
	}
	if err := putBytes(blob(mdigest), manifest); err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     types.OCIImageIndex,
		"manifests": []map[string]any{{
			"mediaType": mt, "digest": mdigest.String(), "size": len(manifest),
			"annotations": map[string]string{
				"org.opencontainers.image.ref.name": tag.TagStr(),
				"io.containerd.image.name":          tag.Name(),
			},
		}},
	})
	if err != nil {
		return err
	}
	if err := putBytes("index.json", index); err != nil {
		return err
	}
	docker, err := json.Marshal([]map[string]any{{"Config": blob(cdigest), "RepoTags": []string{tag.Name()}, "Layers": layerPaths}})
	if err != nil {
		return err
	}
	if err := putBytes("manifest.json", docker); err != nil {
		return err
	}
	return tw.Close()
}
