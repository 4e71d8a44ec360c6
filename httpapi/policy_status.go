package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// policyStatus answers GET /v1/policy/status: P1-P7 as evaluated by this
// server from its own state, with its SIMULATION_MODE.
func (a *API) policyStatus(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	st := a.policy.Status(ctx)
	w.Header().Set(HeaderIndex, strconv.FormatUint(st.Index, 10))
	writeJSON(w, http.StatusOK, st)
}
