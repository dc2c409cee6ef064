import uuid

import pytest

from delivery.portal_links import PortalLinks, PortalTokens

KEY = b"k" * 32


def test_a_token_names_its_order_and_is_valid_only_for_its_generation() -> None:
    tokens = PortalTokens(KEY)
    cfg_id = str(uuid.uuid4())
    token = tokens.token(cfg_id, 0)
    assert PortalTokens.cfg_id_of(token) == cfg_id
    assert tokens.is_valid(token, cfg_id, 0)
    assert not tokens.is_valid(token, cfg_id, 1), "a rotated generation retires the token"
    assert tokens.token(cfg_id, 0) == token, "the same order and generation give the same link"


def test_tokens_differ_per_order_and_per_key() -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    tokens = PortalTokens(KEY)
    assert tokens.token(first, 0) != tokens.token(second, 0)
    assert PortalTokens(b"x" * 32).token(first, 0) != tokens.token(first, 0)
    forged = PortalTokens(b"x" * 32).token(first, 0)
    assert PortalTokens.cfg_id_of(forged) == first and not tokens.is_valid(forged, first, 0)


@pytest.mark.parametrize("garbage", ["", "abc", "!!!!", "a" * 200])
def test_malformed_tokens_name_no_order(garbage: str) -> None:
    assert PortalTokens.cfg_id_of(garbage) is None


def test_a_well_formed_guess_is_not_valid() -> None:
    guess = "a" * 43
    cfg_id = PortalTokens.cfg_id_of(guess)
    assert cfg_id is not None and not PortalTokens(KEY).is_valid(guess, cfg_id, 0)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        PortalTokens(b"short")


def test_links_live_under_the_public_url() -> None:
    links = PortalLinks(base_url="https://platform.example.com/", token="T")
    assert links.portal() == "https://platform.example.com/portal/T"
    assert links.version_page(3) == "https://platform.example.com/portal/T/v3"
    assert links.artifact(3, "cfn.yaml") == "https://platform.example.com/portal/T/v3/cfn.yaml"


def test_the_commissioning_token_is_per_order_stable_and_not_the_portal_token() -> None:
    tokens = PortalTokens(b"k" * 32)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    token = tokens.commissioning_token(first, 0)
    # Stable: every rebuild of the order's bundle and seed ISO carries the same one.
    assert token == PortalTokens(b"k" * 32).commissioning_token(first, 0)
    assert token != tokens.commissioning_token(second, 0)
    assert token != PortalTokens(b"o" * 32).commissioning_token(first, 0)
    assert token not in tokens.token(first, 0)
    assert len(token) == 22


def test_generation_0_is_the_token_sites_got_before_rotation_existed() -> None:
    # What the derivation without a generation gave for this order and key, so every site
    # delivered before keeps its token.
    cfg_id = "3f2c1e9a-7b4d-4c8e-9a1f-2b3c4d5e6f70"
    assert PortalTokens(b"k" * 32).commissioning_token(cfg_id, 0) == "IXj7ugNXFDny1LCEVdjJoQ"


def test_a_rotated_commissioning_token_differs_from_every_earlier_one() -> None:
    tokens = PortalTokens(b"k" * 32)
    cfg_id = str(uuid.uuid4())
    generations = [tokens.commissioning_token(cfg_id, generation) for generation in range(4)]
    assert len(set(generations)) == 4
    assert generations[2] == PortalTokens(b"k" * 32).commissioning_token(cfg_id, 2)
    # Not the portal link's token of the same generation either.
    assert all(token not in tokens.token(cfg_id, g) for g, token in enumerate(generations))
    with pytest.raises(ValueError, match="0 or more"):
        tokens.commissioning_token(cfg_id, -1)
