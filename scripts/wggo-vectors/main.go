// Command wggo-vectors prints, as JSON, whole WireGuard messages made by
// wireguard-go from fixed inputs: two handshake initiations (the second with
// mac2 from a cookie), the cookie reply between them, the response, and the
// first transport messages both ways.  wgc's tests (tests/test_vectors_wireguard_go.py)
// hold wgc's own messages against them.  See README.md for how to run it.
//
// Every random byte wireguard-go draws comes from crypto/rand.Reader, which
// this program replaces with a script: each draw gets the next queued input,
// which must have the draw's exact length, and any draw nothing was queued
// for stops the program.  So the JSON records every input wireguard-go used;
// the initiations' timestamps, which it takes from the clock, are read off
// the same clock around each call and recorded as well.
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tai64n"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// ---- scripted randomness ----------------------------------------------------

type script struct {
	mu    sync.Mutex
	queue [][]byte
}

func (s *script) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 || len(s.queue[0]) != len(p) {
		panic(fmt.Sprintf("wireguard-go drew %d random bytes that were not scripted", len(p)))
	}
	copy(p, s.queue[0])
	s.queue = s.queue[1:]
	return len(p), nil
}

func (s *script) feed(draws ...[]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append([][]byte(nil), draws...)
}

func (s *script) drained() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) != 0 {
		panic(fmt.Sprintf("%d scripted draws were not taken", len(s.queue)))
	}
}

var random = &script{}

// input is a fixed byte string named by its use: the first n bytes of
// SHA-256 over "wgc wireguard-go vector: " + name.
func input(name string, n int) []byte {
	sum := sha256.Sum256([]byte("wgc wireguard-go vector: " + name))
	return sum[:n]
}

func clamped(b []byte) []byte {
	k := append([]byte(nil), b...)
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k
}

// ---- a bind that hands the test what the device sends ----------------------

type endpoint netip.AddrPort

func (e endpoint) ClearSrc()           {}
func (e endpoint) SrcToString() string { return "" }
func (e endpoint) DstToString() string { return netip.AddrPort(e).String() }
func (e endpoint) DstToBytes() []byte {
	a := netip.AddrPort(e)
	return binary.BigEndian.AppendUint16(a.Addr().AsSlice(), a.Port())
}
func (e endpoint) DstIP() netip.Addr { return netip.AddrPort(e).Addr() }
func (e endpoint) SrcIP() netip.Addr { return netip.Addr{} }

// memoryBind: datagrams put on in are received from peer; every datagram
// sent goes to out.
type memoryBind struct {
	in, out chan []byte
	peer    endpoint
	closed  chan struct{}
}

func newMemoryBind(peer string) *memoryBind {
	return &memoryBind{
		in:   make(chan []byte, 16),
		out:  make(chan []byte, 16),
		peer: endpoint(netip.MustParseAddrPort(peer)),
	}
}

func (b *memoryBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	closed := make(chan struct{})
	b.closed = closed
	receive := func(p []byte) (int, conn.Endpoint, error) {
		select {
		case <-closed:
			return 0, nil, net.ErrClosed
		case d := <-b.in:
			return copy(p, d), b.peer, nil
		}
	}
	return []conn.ReceiveFunc{receive}, port, nil
}

func (b *memoryBind) Close() error {
	if b.closed != nil {
		close(b.closed)
		b.closed = nil
	}
	return nil
}

func (b *memoryBind) SetMark(uint32) error { return nil }

func (b *memoryBind) Send(p []byte, _ conn.Endpoint) error {
	b.out <- append([]byte(nil), p...)
	return nil
}

func (b *memoryBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	a, err := netip.ParseAddrPort(s)
	return endpoint(a), err
}

func next(c chan []byte, what string) []byte {
	select {
	case d := <-c:
		return d
	case <-time.After(5 * time.Second):
		panic("nothing came: " + what)
	}
}

// ---- the two devices ---------------------------------------------------------

type side struct {
	dev     *device.Device
	tun     *tuntest.ChannelTUN
	bind    *memoryBind
	public  device.NoisePublicKey
	private []byte
}

func newSide(private, peerPublic, psk []byte, peerAddress, peerAllowed string) *side {
	s := &side{tun: tuntest.NewChannelTUN(), bind: newMemoryBind(peerAddress), private: private}
	s.dev = device.NewDevice(s.tun.TUN(), s.bind, device.NewLogger(device.LogLevelError, ""))
	config := fmt.Sprintf("private_key=%x\npublic_key=%x\npreshared_key=%x\nendpoint=%s\nallowed_ip=%s\n",
		private, peerPublic, psk, peerAddress, peerAllowed)
	if err := s.dev.IpcSet(config); err != nil {
		panic(err)
	}
	if err := s.dev.Up(); err != nil {
		panic(err)
	}
	return s
}

func marshal(msg any) []byte {
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, msg); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// ipv4 is an IPv4 packet of 84 bytes (a ping's size) from src to dst whose
// payload counts up from first; the header checksum is left zero, as
// WireGuard does not read it.
func ipv4(src, dst [4]byte, first byte) []byte {
	p := make([]byte, 84)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, 1
	copy(p[12:], src[:])
	copy(p[16:], dst[:])
	for i := 20; i < len(p); i++ {
		p[i] = first + byte(i)
	}
	return p
}

// ---- the messages ------------------------------------------------------------

type hexBytes []byte

func (h hexBytes) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

type initiationVector struct {
	EphemeralRandom hexBytes `json:"ephemeral_random"`
	IndexRandom     hexBytes `json:"index_random"`
	SenderIndex     uint32   `json:"sender_index"`
	Timestamp       hexBytes `json:"timestamp"`
	WallNs          int64    `json:"wall_ns"`
	Message         hexBytes `json:"message"`
}

// initiate has a create an initiation for its peer and macs it with gen; the
// timestamp is the clock's on both sides of the call (retried until they agree).
func initiate(a *side, peer *device.Peer, gen *device.CookieGenerator, name string) initiationVector {
	v := initiationVector{EphemeralRandom: input(name+" ephemeral", 32), IndexRandom: input(name+" index", 4)}
	for {
		random.feed(v.EphemeralRandom, v.IndexRandom)
		before := tai64n.Now()
		msg, err := a.dev.CreateMessageInitiation(peer)
		after := tai64n.Now()
		if err != nil {
			panic(err)
		}
		random.drained()
		if before == after {
			v.SenderIndex = msg.Sender
			v.Timestamp = before[:]
			seconds := binary.BigEndian.Uint64(before[:8]) - 0x400000000000000a
			v.WallNs = int64(seconds)*int64(time.Second) + int64(binary.BigEndian.Uint32(before[8:]))
			v.Message = marshal(msg)
			gen.AddMacs(v.Message)
			return v
		}
	}
}

type vectors struct {
	Provenance      map[string]string `json:"provenance"`
	InitiatorKey    hexBytes          `json:"initiator_private_key"`
	InitiatorPublic hexBytes          `json:"initiator_public_key"`
	ResponderKey    hexBytes          `json:"responder_private_key"`
	ResponderPublic hexBytes          `json:"responder_public_key"`
	PresharedKey    hexBytes          `json:"preshared_key"`
	Initiation1     initiationVector  `json:"initiation_without_cookie"`
	CookieReply     struct {
		Source  hexBytes `json:"source"`
		Secret  hexBytes `json:"secret_random"`
		Nonce   hexBytes `json:"nonce_random"`
		Message hexBytes `json:"message"`
	} `json:"cookie_reply"`
	Initiation2 initiationVector `json:"initiation_with_cookie"`
	Response    struct {
		EphemeralRandom hexBytes `json:"ephemeral_random"`
		IndexRandom     hexBytes `json:"index_random"`
		SenderIndex     uint32   `json:"sender_index"`
		Message         hexBytes `json:"message"`
	} `json:"response"`
	Transport struct {
		MTU             int      `json:"mtu"`
		InitiatorKeep   hexBytes `json:"initiator_keepalive"`
		InitiatorPacket hexBytes `json:"initiator_packet"`
		InitiatorData   hexBytes `json:"initiator_data"`
		ResponderPacket hexBytes `json:"responder_packet"`
		ResponderData   hexBytes `json:"responder_data"`
	} `json:"transport"`
}

func main() {
	rand.Reader = random
	var v vectors
	v.Provenance = map[string]string{
		"wireguard-go": "0.0.20220316 (Debian 12 package golang-golang.zx2c4-wireguard-dev 0.0.20220316-1)",
		"go":           runtime.Version() + " (Debian 12 package golang-go)",
		"generator":    "scripts/wggo-vectors/main.go (see its README.md)",
		"inputs":       "every fixed input is the first bytes of SHA-256(\"wgc wireguard-go vector: \" + its name); timestamps are the clock's at generation",
		"layout":       "initiator A (10.0.0.1, at 127.0.0.1:51001) and responder B (10.0.0.2, at 127.0.0.2:51002); A's keepalive is the one a completed handshake sends, so it has counter 0 and A's data counter 1; B's data has counter 0, after B received both",
	}
	v.InitiatorKey = clamped(input("initiator static", 32))
	v.ResponderKey = clamped(input("responder static", 32))
	v.InitiatorPublic = public(v.InitiatorKey)
	v.ResponderPublic = public(v.ResponderKey)
	v.PresharedKey = input("preshared key", 32)
	// A: 10.0.0.1 at 127.0.0.1:51001; B: 10.0.0.2 at 127.0.0.2:51002.
	a := newSide(v.InitiatorKey, v.ResponderPublic, v.PresharedKey, "127.0.0.2:51002", "10.0.0.2/32")
	b := newSide(v.ResponderKey, v.InitiatorPublic, v.PresharedKey, "127.0.0.1:51001", "10.0.0.1/32")
	peerB := a.dev.LookupPeer(noiseKey(v.ResponderPublic))
	peerA := b.dev.LookupPeer(noiseKey(v.InitiatorPublic))
	var genA, genB device.CookieGenerator // A's macs for B, and B's for A
	genA.Init(noiseKey(v.ResponderPublic))
	genB.Init(noiseKey(v.InitiatorPublic))
	var checkerB device.CookieChecker
	checkerB.Init(noiseKey(v.ResponderPublic))

	// B, under load, answers A's first initiation with a cookie reply; A's
	// second initiation carries mac2 from that cookie.
	v.Initiation1 = initiate(a, peerB, &genA, "initiation 1")
	c := &v.CookieReply
	c.Source = endpoint(netip.MustParseAddrPort("127.0.0.1:51001")).DstToBytes()
	c.Secret, c.Nonce = input("cookie secret", 32), input("cookie nonce", 24)
	random.feed(c.Secret, c.Nonce)
	reply, err := checkerB.CreateReply(v.Initiation1.Message, v.Initiation1.SenderIndex, c.Source)
	if err != nil {
		panic(err)
	}
	random.drained()
	c.Message = marshal(reply)
	if !genA.ConsumeReply(reply) {
		panic("A refused the cookie reply")
	}
	v.Initiation2 = initiate(a, peerB, &genA, "initiation 2")
	if !checkerB.CheckMAC1(v.Initiation2.Message) || !checkerB.CheckMAC2(v.Initiation2.Message, c.Source) {
		panic("the second initiation's macs do not check")
	}

	var initiation device.MessageInitiation
	unmarshal(v.Initiation2.Message, &initiation)
	if b.dev.ConsumeMessageInitiation(&initiation) != peerA {
		panic("B refused the initiation")
	}
	r := &v.Response
	r.EphemeralRandom, r.IndexRandom = input("response ephemeral", 32), input("response index", 4)
	random.feed(r.IndexRandom, r.EphemeralRandom) // the response draws its index first
	response, err := b.dev.CreateMessageResponse(peerA)
	if err != nil {
		panic(err)
	}
	random.drained()
	r.SenderIndex = response.Sender
	r.Message = marshal(response)
	genB.AddMacs(r.Message)
	if a.dev.ConsumeMessageResponse(response) != peerB {
		panic("A refused the response")
	}
	if peerB.BeginSymmetricSession() != nil || peerA.BeginSymmetricSession() != nil {
		panic("no session")
	}

	t := &v.Transport
	t.MTU = tuntest.DefaultMTU
	peerB.SendKeepalive()
	t.InitiatorKeep = next(a.bind.out, "A's keepalive")
	t.InitiatorPacket = ipv4([4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}, 0)
	a.tun.Outbound <- t.InitiatorPacket
	t.InitiatorData = next(a.bind.out, "A's data")
	b.bind.in <- t.InitiatorKeep
	b.bind.in <- t.InitiatorData
	if !bytes.Equal(next(b.tun.Inbound, "A's packet at B"), t.InitiatorPacket) {
		panic("B received another packet")
	}
	t.ResponderPacket = ipv4([4]byte{10, 0, 0, 2}, [4]byte{10, 0, 0, 1}, 0x80)
	b.tun.Outbound <- t.ResponderPacket
	t.ResponderData = next(b.bind.out, "B's data")
	a.bind.in <- t.ResponderData
	if !bytes.Equal(next(a.tun.Inbound, "B's packet at A"), t.ResponderPacket) {
		panic("A received another packet")
	}
	select {
	case d := <-a.bind.out:
		panic(fmt.Sprintf("A sent an unexpected %d bytes", len(d)))
	case d := <-b.bind.out:
		panic(fmt.Sprintf("B sent an unexpected %d bytes", len(d)))
	default:
	}

	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", " ")
	if err := out.Encode(v); err != nil {
		panic(err)
	}
}

func public(private []byte) []byte {
	p, err := curve25519.X25519(private, curve25519.Basepoint)
	if err != nil {
		panic(err)
	}
	return p
}

func unmarshal(b []byte, msg any) {
	if err := binary.Read(bytes.NewReader(b), binary.LittleEndian, msg); err != nil {
		panic(err)
	}
}

func noiseKey(b []byte) (k device.NoisePublicKey) {
	copy(k[:], b)
	return k
}
