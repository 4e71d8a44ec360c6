package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// MaxBodyBytes is the default limit on a request body.
const MaxBodyBytes = 1 << 20

// readBody reads at most limit bytes of the request body; a larger body is
// errBodyTooLarge.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", errBodyTooLarge, r.ContentLength, limit)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("%w: the limit is %d bytes", errBodyTooLarge, limit)
		}
		return nil, badRequest("bad_body", "could not read the request body: "+err.Error())
	}
	return b, nil
}

// decodeStrict decodes exactly one JSON value from b into v. Unknown fields,
// trailing data, an empty body and type mismatches are 400s whose message
// names the problem.
func decodeStrict(b []byte, v any) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return badRequest("empty_body", "the request body is empty; send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("malformed_json", "the body has data after the JSON object; send exactly one object")
	}
	return nil
}

func jsonError(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return badRequest("malformed_json", fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, err))
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "the body"
		}
		return badRequest("invalid_type", fmt.Sprintf("%s must be %s, not %s", field, jsonKind(te.Type.Kind().String()), te.Value))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("malformed_json", "malformed JSON: the body ends in the middle of a value")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return badRequest("unknown_field", strings.TrimPrefix(err.Error(), "json: ")+"; remove it or check its spelling")
	}
	return badRequest("malformed_json", "malformed JSON: "+err.Error())
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "map", "struct":
		return "an object"
	case "slice", "array":
		return "an array"
	case "bool":
		return "a boolean"
	}
	return "a number"
}

// parseCAS reads ?cas=N. It returns nil when the parameter is absent.
func parseCAS(r *http.Request) (*uint64, error) {
	raw, ok := r.URL.Query()["cas"]
	if !ok {
		return nil, nil
	}
	if len(raw) != 1 {
		return nil, badRequest("invalid_cas", "give cas once")
	}
	n, err := strconv.ParseUint(raw[0], 10, 64)
	if err != nil {
		return nil, badRequest("invalid_cas", fmt.Sprintf("cas %q must be a modify index (a non-negative integer; 0 means create only)", raw[0]))
	}
	return &n, nil
}
