// Command atomfed-image writes the atomfed container image as a tarball
// (`make image`): no Docker daemon, no registry. See package image.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/atomcloud/atomfed/deploy/image"
)

func main() {
	var o image.Options
	var ref, out string
	flag.StringVar(&o.Binary, "binary", "bin/image/atomfed", "the static atomfed binary (CGO_ENABLED=0)")
	flag.StringVar(&ref, "ref", image.DefaultRepository+":dev", "the image's name and tag")
	flag.StringVar(&out, "out", "bin/atomfed-image.tar", "the tarball to write")
	flag.StringVar(&o.Version, "version", "dev", "org.opencontainers.image.version")
	flag.StringVar(&o.Revision, "revision", "unknown", "org.opencontainers.image.revision (the git commit)")
	flag.StringVar(&o.CABundle, "ca-bundle", defaultCABundle(), "CA roots copied to "+image.CAPath+" (empty: none)")
	flag.Parse()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fail(fmt.Errorf("SOURCE_DATE_EPOCH %q is not a number of seconds", s))
		}
		o.Created = time.Unix(sec, 0)
	}
	img, err := image.Build(o)
	if err != nil {
		fail(err)
	}
	if err := image.WriteArchive(out, ref, img); err != nil {
		fail(err)
	}
	d, err := img.Digest()
	if err != nil {
		fail(err)
	}
	fmt.Printf("wrote %s: %s (manifest %s)\nload it with: docker load -i %s (or podman load -i, kind load image-archive); push it with: skopeo copy oci-archive:%s docker://%s\n", out, ref, d, out, out, ref)
}

// defaultCABundle is the build machine's Debian CA bundle when present.
func defaultCABundle() string {
	if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		return "/etc/ssl/certs/ca-certificates.crt"
	}
	return ""
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}
