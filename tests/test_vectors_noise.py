"""Known answers for the handshake's construction: WireGuard's constants, the
KDF (wireguard-go's vectors) and a generic Noise_IKpsk2 run (cacophony)."""
import json
from pathlib import Path

import pytest

from wgc import _crypto, noise

VECTORS = Path(__file__).parent / "vectors"
KDF = json.loads((VECTORS / "wireguard-go-kdf.json").read_text())
IKPSK2 = json.loads((VECTORS / "noise-ikpsk2-cacophony.json").read_text())["vectors"][0]


def test_initial_chaining_key_and_hash():
    assert noise.INITIAL_CHAINING_KEY.hex() == "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36"
    assert noise.INITIAL_HASH.hex() == "2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3"


@pytest.mark.parametrize("v", KDF["vectors"], ids=range(len(KDF["vectors"])))
def test_kdf(v):
    key, data = bytes.fromhex(v["key"]), bytes.fromhex(v["input"])
    expected = (v["t0"], v["t1"], v["t2"])
    for n in (1, 2, 3):
        assert [t.hex() for t in noise.kdf(key, data, n)] == list(expected[:n])


def test_noise_ikpsk2_vector():
    """The handshake's steps, composed as the generic pattern:
    <- s ... -> e, es, s, ss  <- e, ee, se, psk; then Split()."""
    v = IKPSK2
    b = {k: bytes.fromhex(v[k]) for k in ("init_static", "init_ephemeral", "resp_static", "resp_ephemeral")}
    prologue, psk = bytes.fromhex(v["init_prologue"]), bytes.fromhex(v["init_psks"][0])
    name = v["protocol_name"].encode()
    s_i, e_i, s_r, e_r = (
        _crypto.clamp(b[k]) for k in ("init_static", "init_ephemeral", "resp_static", "resp_ephemeral")
    )
    S_i, E_i, S_r, E_r = (_crypto.public_key(k) for k in (s_i, e_i, s_r, e_r))
    assert S_r.hex() == v["init_remote_static"]
    payloads = [bytes.fromhex(m["payload"]) for m in v["messages"]]

    # Initialize: a 37-byte name is hashed; the prologue and <- s are mixed in.
    ck = h = noise.hash(name)
    h = noise.mix_hash(h, prologue)
    h = noise.mix_hash(h, S_r)
    # -> e, es, s, ss, payload
    h = noise.mix_hash(h, E_i)
    ck = noise.mix_key(ck, E_i)  # psk patterns mix e into the key too
    ck, k = noise.mix_key_and_key(ck, _crypto.dh(e_i, S_r))
    enc_static, h = noise.encrypt_and_hash(k, h, S_i)
    ck, k = noise.mix_key_and_key(ck, _crypto.dh(s_i, S_r))
    enc_payload, h = noise.encrypt_and_hash(k, h, payloads[0])
    assert (E_i + enc_static + enc_payload).hex() == v["messages"][0]["ciphertext"]
    # <- e, ee, se, psk, payload
    h = noise.mix_hash(h, E_r)
    ck = noise.mix_key(ck, E_r)
    ck = noise.mix_key(ck, _crypto.dh(e_r, E_i))
    ck = noise.mix_key(ck, _crypto.dh(e_r, S_i))
    ck, h, k = noise.mix_key_and_hash(ck, h, psk)
    enc_payload, h = noise.encrypt_and_hash(k, h, payloads[1])
    assert (E_r + enc_payload).hex() == v["messages"][1]["ciphertext"]
    assert h.hex() == v["handshake_hash"]
    # Split, as begin_session does it for each side: even messages go initiator -> responder
    # with the first key.
    initiator, responder = noise.Handshake(None, S_r), noise.Handshake(None, S_i)
    initiator.state, responder.state = noise.RESPONSE_CONSUMED, noise.RESPONSE_CREATED
    initiator.chaining_key = responder.chaining_key = ck
    keys_i, keys_r = noise.begin_session(initiator), noise.begin_session(responder)
    k1, k2 = keys_i.send_key, keys_i.recv_key
    assert (keys_r.recv_key, keys_r.send_key) == (k1, k2)
    counters = [0, 0]
    for i, m in enumerate(v["messages"][2:]):
        direction = i % 2
        key = (k1, k2)[direction]
        assert _crypto.seal(key, counters[direction], payloads[i + 2]).hex() == m["ciphertext"]
        counters[direction] += 1
