package image

import (
	"bytes"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
)

func parseTag(ref string) (name.Tag, error) {
	t, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image reference %q: %w (want repository:tag, e.g. %s:0.1.0)", ref, err, DefaultRepository)
	}
	return t, nil
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
