package herald

// #include <herald.h>
import "C"

import (
	"encoding/json"
	"runtime"
)

// PresenceSession is who joins a presence topic.
type PresenceSession struct {
	ClientID string
	User     string
	Device   string
	// Metadata is empty or a JSON document.
	Metadata json.RawMessage
}

// PresenceMember is one session listed by PresenceList.
type PresenceMember struct {
	ClientID string `json:"client_id"`
	User     string `json:"user"`
	Device   string `json:"device"`
	// Metadata is the session's JSON document, nil if it has none.
	Metadata        json.RawMessage `json:"metadata"`
	ConnectedAtNs   uint64          `json:"connected_at_ns"`
	LastHeartbeatNs uint64          `json:"last_heartbeat_ns"`
}

// PresenceJoin joins (or refreshes) session s.ClientID on topic; a new
// session publishes presence.join on "$presence.<topic>".
func (b *Broker) PresenceJoin(topic string, s PresenceSession) error {
	meta := string(s.Metadata)
	err := call(func() C.herald_result {
		return C.herald_broker_presence_join(b.ptr, strPtr(topic), C.size_t(len(topic)),
			strPtr(s.ClientID), C.size_t(len(s.ClientID)), strPtr(s.User), C.size_t(len(s.User)),
			strPtr(s.Device), C.size_t(len(s.Device)), strPtr(meta), C.size_t(len(meta)))
	})
	runtime.KeepAlive(topic)
	runtime.KeepAlive(s)
	runtime.KeepAlive(meta)
	return err
}

// PresenceHeartbeat refreshes session clientID on topic (ErrPresence if it
// is unknown or expired).
func (b *Broker) PresenceHeartbeat(topic, clientID string) error {
	err := call(func() C.herald_result {
		return C.herald_broker_presence_heartbeat(b.ptr, strPtr(topic), C.size_t(len(topic)),
			strPtr(clientID), C.size_t(len(clientID)))
	})
	runtime.KeepAlive(topic)
	runtime.KeepAlive(clientID)
	return err
}

// PresenceLeave ends session clientID on topic (publishing presence.leave)
// and tells whether it existed.
func (b *Broker) PresenceLeave(topic, clientID string) (bool, error) {
	var was C.bool
	err := call(func() C.herald_result {
		return C.herald_broker_presence_leave(b.ptr, strPtr(topic), C.size_t(len(topic)),
			strPtr(clientID), C.size_t(len(clientID)), &was)
	})
	runtime.KeepAlive(topic)
	runtime.KeepAlive(clientID)
	return bool(was), err
}

// PresenceExpire expires the sessions without a recent heartbeat
// (publishing presence.expire for each) and returns how many.
func (b *Broker) PresenceExpire() (int, error) {
	var n C.size_t
	err := call(func() C.herald_result { return C.herald_broker_presence_expire(b.ptr, &n) })
	return int(n), err
}

// PresenceList lists the sessions present on topic.
func (b *Broker) PresenceList(topic string) ([]PresenceMember, error) {
	// The library writes plain bytes (no pointers), so a Go buffer is fine.
	// The list may grow between the size query and the read: ask again.
	buf := make([]byte, 4096)
	for {
		var n, count C.size_t
		err := call(func() C.herald_result {
			return C.herald_broker_presence_list(b.ptr, strPtr(topic), C.size_t(len(topic)),
				bytesPtr(buf), C.size_t(len(buf)), &n, &count)
		})
		runtime.KeepAlive(topic)
		if err == nil {
			members := make([]PresenceMember, 0, int(count))
			if err := json.Unmarshal(buf[:n], &members); err != nil {
				return nil, err
			}
			for i := range members {
				if string(members[i].Metadata) == "null" {
					members[i].Metadata = nil
				}
			}
			return members, nil
		}
		if code, ok := err.(*Error); ok && code.Code == ErrBufferTooSmall {
			buf = make([]byte, int(n))
			continue
		}
		return nil, err
	}
}
