package cluster

// peerCondition is what an idle connection shows of its peer.
type peerCondition int

const (
	// peerQuiet: open, nothing to read.
	peerQuiet peerCondition = iota
	// peerSentData: open, unread data waits.
	peerSentData
	// peerGone: closed or reset by the peer.
	peerGone
)
