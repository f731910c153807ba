"""The service class with a tiny trained model: answers, cold start, new items, live
events, cache, and, through its ASGI app (the full middleware stack, no socket), auth,
bad input, logs and the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.inference.tiny import USERS
from tests.services.conftest import TOKEN

KNOWN = USERS[0]  # watches the animation group, then one action film
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def call(api, **kwargs) -> dict:
    """An API method called as the server calls it; its JSON answer."""
    response = asyncio.run(api(**kwargs))
    assert response.status_code == 200, response.body
    return json.loads(response.body)


def ids(answer: dict) -> list[str]:
    return [item["item_id"] for item in answer["items"]]


@pytest.fixture
def service(bundle_dir: Path, encoder, tmp_path: Path):
    from pipelines.inference.live import SqliteState
    from services.recommender import RecommenderService

    state = SqliteState(tmp_path / "live.sqlite")
    return RecommenderService.inner(
        bundle_dir=bundle_dir, encoder=encoder, background=False, state=state
    )


# -- the class itself ------------------------------------------------------------------------


def test_known_user_gets_unseen_items_with_reasons(service) -> None:
    bundle = service._bundle
    seen = {bundle.catalogue.item_ids[i] for i in bundle.users.items[bundle.users.index[KNOWN]]}
    answer = call(service.recommend, user_id=KNOWN, k=5)
    assert not answer["fallback"] and len(answer["items"]) == 5
    assert not seen & set(ids(answer))  # exclude_seen by default
    assert all(item["reason"] for item in answer["items"])  # every pick names history items
    assert all(r["item_id"] in seen for item in answer["items"] for r in item["reason"])
    scores = [item["score"] for item in answer["items"]]
    assert scores == sorted(scores, reverse=True)
    with_seen = call(service.recommend, user_id=KNOWN, k=12, exclude_seen=False)
    assert seen <= set(ids(with_seen))


def test_the_cache_key_holds_exclude_seen(service) -> None:
    # the same user with exclude_seen true, then false: a key without the flag would
    # hand back the masked list the second time
    bundle = service._bundle
    seen = {bundle.catalogue.item_ids[i] for i in bundle.users.items[bundle.users.index[KNOWN]]}
    masked = call(service.recommend, user_id=KNOWN, k=12, exclude_seen=True)
    unmasked = call(service.recommend, user_id=KNOWN, k=12, exclude_seen=False)
    assert not seen & set(ids(masked))
    assert seen <= set(ids(unmasked))


def test_unknown_user_falls_back_to_popularity(service) -> None:
    answer = call(service.recommend, user_id="u_ffffffffffffffff", k=3)
    assert answer["fallback"]
    popularity = service._bundle.catalogue.popularity
    assert [item["score"] for item in answer["items"]] == sorted(popularity, reverse=True)[:3]


def test_session_with_no_events_and_with_duplicates(service) -> None:
    from services.schemas import Event, Profile

    empty = call(service.recommend_session, history=[], k=4)
    assert len(empty["items"]) == 4 and not empty["fallback"]
    events = [Event(item_id="4", timestamp=10), Event(item_id="4", timestamp=20)]
    once = call(service.recommend_session, history=events[:1], k=11)
    twice = call(service.recommend_session, history=events, k=11)
    assert "4" not in ids(twice)
    assert ids(once) == ids(twice)
    unknown = call(
        service.recommend_session,
        history=[Event(item_id="nope", timestamp=1)],
        profile=Profile(gender="F"),
        k=3,
    )
    assert unknown["ignored_events"] == 1 and len(unknown["items"]) == 3


def test_similar_by_item_and_by_text(service) -> None:
    by_item = call(service.similar, item_id="7", k=3)  # Alien
    assert "7" not in ids(by_item)
    assert ids(by_item)[0] in {"8", "9"}  # the other science fiction films
    by_text = call(service.similar, text="a romantic period drama", k=3)
    assert set(ids(by_text)) & {"10", "11", "12"}


def test_added_item_is_found_and_recommended_without_retraining(service) -> None:
    from services.schemas import Event

    before = call(service.recommend_session, history=[], k=12)
    assert "space-1" not in ids(before)
    added = call(
        service.items,
        item_id="space-1",
        title="Space Pirates of Andromeda",
        year=2024,
        genres=["Sci-Fi"],
    )
    assert added["recommendable"] and added["catalogue_size"] == 13
    assert call(service.similar, text="space pirates", k=3)["items"][0]["item_id"] == "space-1"
    after = call(service.recommend_session, history=[Event(item_id="8", timestamp=5)], k=12)
    assert "space-1" in ids(after)  # scored from its text alone
    assert after["model_version"].endswith("+1items")


def test_a_duplicate_item_is_refused_before_the_encoder_runs(service) -> None:
    call(service.items, item_id="dup-0", title="Once")

    class Refuse:
        def encode(self, texts):
            raise AssertionError("the encoder ran for a duplicate")

    service._encoder = Refuse()
    assert asyncio.run(service.items(item_id="dup-0", title="Twice")).status_code == 409
    assert asyncio.run(service.items(item_id="1", title="Toy Story")).status_code == 409


def test_an_event_reaches_the_next_recommendation_and_is_never_returned(service) -> None:
    first = call(service.recommend, user_id=KNOWN, k=3)
    watched = first["items"][0]["item_id"]
    recorded = call(service.events, user_id=KNOWN, item_id=watched, timestamp=2_000_000)
    assert recorded == {"recorded": True, "events": 1}
    again = call(service.events, user_id=KNOWN, item_id=watched, timestamp=2_000_000)
    assert again == {"recorded": False, "events": 1}  # idempotent
    after = call(service.recommend, user_id=KNOWN, k=12)
    assert watched not in ids(after)  # the cached answer was not reused
    named = {r["item_id"] for item in after["items"] for r in item["reason"]}
    assert watched in named or after["items"] != first["items"]
    unknown = asyncio.run(service.events(user_id=KNOWN, item_id="nope", timestamp=1))
    assert unknown.status_code == 404


def test_a_new_user_with_live_events_is_ranked_by_the_model(service) -> None:
    new = "u_00000000000000aa"
    assert call(service.recommend, user_id=new, k=3)["fallback"]
    call(service.events, user_id=new, item_id="7", timestamp=5_000)
    call(service.events, user_id=new, item_id="8", timestamp=5_060)
    answer = call(service.recommend, user_id=new, k=3)
    assert not answer["fallback"] and not {"7", "8"} & set(ids(answer))


def test_a_restarted_service_keeps_the_live_state(bundle_dir: Path, encoder, tmp_path) -> None:
    from pipelines.inference.live import SqliteState
    from services.recommender import RecommenderService

    path = tmp_path / "durable.sqlite"
    first = RecommenderService.inner(
        bundle_dir=bundle_dir, encoder=encoder, background=False, state=SqliteState(path)
    )
    call(first.items, item_id="kept-1", title="A Film Added Live", genres=["Drama"])
    call(first.events, user_id=KNOWN, item_id="kept-1", timestamp=3_000_000)
    second = RecommenderService.inner(
        bundle_dir=bundle_dir, encoder=encoder, background=False, state=SqliteState(path)
    )
    assert "kept-1" in second._bundle.catalogue.index
    assert "kept-1" not in ids(call(second.recommend, user_id=KNOWN, k=13))


def test_cache_hits_and_invalidation(service) -> None:
    first = call(service.recommend, user_id=KNOWN, k=3)
    assert call(service.recommend, user_id=KNOWN, k=3) == first
    assert service.cache.hits == 1 and service.cache.misses == 1
    call(service.items, item_id="new-2", title="Brand New Film", genres=["Drama"])
    call(service.recommend, user_id=KNOWN, k=3)
    assert service.cache.misses == 2  # the catalogue grew: a text model's answers may change
    bundle = service._bundle
    bundle.card = {**bundle.card, "version": "tiny:2"}
    service.swap(bundle)  # a new champion
    assert len(service.cache) == 0
    assert "new-2" in service._bundle.catalogue.index  # live items are applied again


def test_the_cache_is_bounded_in_bytes(service) -> None:
    from pipelines.inference.cache import BytesLRU

    service.cache = BytesLRU(6_000, version=service._bundle.version)
    for user in USERS:
        call(service.recommend, user_id=user, k=12)
    assert 0 < service.cache.bytes <= 6_000 and len(service.cache) < len(USERS)


def test_metrics_name_the_model_version_and_worker(service) -> None:
    text = service.__metrics__("# bentoml metrics\n")
    assert 'recops_model_info{name="fusion_transformer",version="tiny:1"' in text
    assert "recops_cache_hit_rate{worker=" in text and "recops_cache_bytes{worker=" in text


def test_raw_ids_are_pseudonymised_with_the_ingestion_key(service) -> None:
    from pipelines.data.privacy import pseudonymise_id

    key = bytes(range(32))
    service._key = key
    assert service.pseudonym("42") == pseudonymise_id("42", key)
    assert service.pseudonym(KNOWN) == KNOWN  # pseudonyms pass through


def test_int8_serving_keeps_the_ranking_close(bundle_dir: Path, encoder, tmp_path) -> None:
    from pipelines.inference.live import SqliteState
    from services.recommender import RecommenderService

    def served(mode: str | None):
        state = SqliteState(tmp_path / f"{mode}.sqlite")
        return RecommenderService.inner(
            bundle_dir=bundle_dir, encoder=encoder, quantization=mode, background=False, state=state
        )

    a = ids(call(served(None).recommend, user_id=KNOWN, k=3))
    b = ids(call(served("int8").recommend, user_id=KNOWN, k=3))
    assert a[0] == b[0]


def test_ids_follow_the_data_contract_pattern() -> None:
    # one pattern: what data/ accepts as an item id, the service accepts, and no other
    import re

    from pipelines.data import contract
    from services.schemas import RecommendRequest, UserEvent

    assert not hasattr(contract, "ITEM_ID_PATTERN")
    for value, ok in [("-1", True), ("_x", True), (".5", True), ("a b", False), ("é", False)]:
        assert bool(re.fullmatch(contract.ID_PATTERN, value)) is ok
        try:
            RecommendRequest(user_id=value)
            UserEvent(user_id="u_1", item_id=value, timestamp=1)
            accepted = True
        except ValueError:
            accepted = False
        assert accepted is ok, value


# -- through the ASGI app: auth, limits, every bad input class -------------------------------


@pytest.fixture(scope="module")
def client(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    monkey = pytest.MonkeyPatch()
    monkey.setenv("RECOPS_API_TOKEN", TOKEN)
    monkey.setenv("RECOPS_BUNDLE_DIR", str(bundle_dir))
    monkey.setenv("RECOPS_LIVE_STATE", str(tmp_path_factory.mktemp("live") / "live.sqlite"))
    from services.recommender import RecommenderService

    with TestClient(RecommenderService.to_asgi(), raise_server_exceptions=False) as test_client:
        for _ in range(600):
            if test_client.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        yield test_client
    monkey.undo()


GOOD = {
    "/recommend": {"user_id": KNOWN, "k": 2},
    "/recommend/session": {"history": [], "k": 2},
    "/similar": {"item_id": "7", "k": 2},
    "/items": {"item_id": "auth-probe", "title": "Never Added"},
    "/events": {"user_id": KNOWN, "item_id": "7", "timestamp": 1},
}
BAD_TOKENS = {
    "missing": {},
    "wrong": {"Authorization": "Bearer not-the-token"},
    "same length": {"Authorization": "Bearer " + "x" * len(TOKEN)},
    "prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "first 8 right": {"Authorization": f"Bearer {TOKEN[:8]}{'0' * (len(TOKEN) - 8)}"},
    "last char differs": {"Authorization": f"Bearer {TOKEN[:-1]}{chr(ord(TOKEN[-1]) ^ 1)}"},
    "longer": {"Authorization": f"Bearer {TOKEN}x"},
    "basic": {"Authorization": f"Basic {TOKEN}"},
    "no scheme": {"Authorization": TOKEN},
    "cookie": {"Cookie": f"token={TOKEN}"},
}


@pytest.mark.parametrize("form", sorted(BAD_TOKENS))
@pytest.mark.parametrize("path", sorted(GOOD))
def test_every_api_refuses_every_bad_token(client: TestClient, path: str, form: str) -> None:
    response = client.post(path, json=GOOD[path], headers=BAD_TOKENS[form])
    assert response.status_code == 401, (path, form)
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_query_string_and_a_second_header_do_not_authenticate(client: TestClient) -> None:
    body = GOOD["/recommend"]
    assert client.post(f"/recommend?token={TOKEN}", json=body).status_code == 401
    assert client.get("/model", params={"access_token": TOKEN}).status_code == 401
    twice = [("authorization", "Bearer wrong"), ("authorization", f"Bearer {TOKEN}")]
    assert client.post("/recommend", json=body, headers=twice).status_code == 401
    right_first = [("authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer wrong")]
    assert client.post("/recommend", json=body, headers=right_first).status_code == 401


def test_probes_are_open_and_apis_need_the_token(client: TestClient) -> None:
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/model").status_code == 401
    assert client.post("/recommend", json=GOOD["/recommend"], headers=AUTH).status_code == 200
    card = client.get("/model", headers=AUTH).json()
    # the client is shared by the module: a test that ran first may have added an item
    assert card["name"] == "fusion_transformer" and card["version"].split("+")[0] == "tiny:1"


SECRET = "zz-secret-input-zz"
BAD = [
    ("/recommend", {"user_id": KNOWN, "k": 0}),
    ("/recommend", {"user_id": KNOWN, "k": 101}),
    ("/recommend", {"user_id": KNOWN, "k": "5"}),  # wrong type: strict
    ("/recommend", {"user_id": KNOWN, "k": 2.5}),
    ("/recommend", {"user_id": f"bad id {SECRET}"}),  # id pattern
    ("/recommend", {"user_id": KNOWN, SECRET: 1}),  # unknown field
    ("/recommend", {"user_id": KNOWN, "at": -1}),
    ("/recommend", {}),
    ("/recommend", [KNOWN]),
    ("/recommend/session", {"history": [{"item_id": "1", "timestamp": 1}] * 501}),
    ("/recommend/session", {"history": [{"item_id": SECRET + "!", "timestamp": 1}]}),
    ("/recommend/session", {"history": [{"item_id": "1", "timestamp": "noon"}]}),
    ("/recommend/session", {"profile": {"gender": SECRET + "\n"}}),
    ("/similar", {"item_id": "1", "text": SECRET}),
    ("/similar", {"k": 3}),
    ("/similar", {"text": ""}),
    ("/items", {"item_id": "x1"}),
    ("/items", {"item_id": "x1", "title": "t", "genres": "Drama"}),
    ("/events", {"user_id": KNOWN, "item_id": "1"}),
    ("/events", {"user_id": KNOWN, "item_id": "1", "timestamp": -5}),
    ("/events", {"user_id": KNOWN, "item_id": "1", "timestamp": 1, SECRET: 2}),
]


@pytest.mark.parametrize(("path", "body"), BAD)
def test_bad_input_is_a_4xx_that_echoes_nothing(client: TestClient, path: str, body) -> None:
    response = client.post(path, json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert SECRET not in response.text and "Traceback" not in response.text
    payload = response.json()
    assert payload["error"] == "invalid request" and isinstance(payload["detail"], list)


def test_malformed_json_oversize_and_media_type(client: TestClient) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    bad = client.post("/recommend", content=b'{"user_id": "' + SECRET.encode(), headers=headers)
    assert bad.status_code == 400 and SECRET not in bad.text
    big = client.post("/recommend", content=b" " * 70_000, headers=headers)
    assert big.status_code == 413
    form = client.post(
        "/recommend", content=b"user_id=1", headers={**AUTH, "content-type": "text/plain"}
    )
    assert form.status_code == 415
    body = json.dumps(GOOD["/recommend"]).encode()
    for media in ("Application/JSON", "application/json; charset=UTF-8"):
        mixed = client.post("/recommend", content=body, headers={**AUTH, "content-type": media})
        assert mixed.status_code == 200, media  # media types compare case-insensitively


def test_unknown_item_is_404_without_echo_or_error_log(client: TestClient, caplog) -> None:
    with caplog.at_level(logging.INFO):
        response = client.post("/similar", json={"item_id": "nope-" + "x" * 10}, headers=AUTH)
        body = {"item_id": "dup-1", "title": "Duplicate Film"}
        assert client.post("/items", json=body, headers=AUTH).status_code == 200
        assert client.post("/items", json=body, headers=AUTH).status_code == 409
    assert response.status_code == 404 and "nope" not in response.text
    # expected answers are not errors: no ERROR record, no traceback
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text


def test_405_names_the_allowed_method(client: TestClient) -> None:
    response = client.get("/recommend", headers=AUTH)
    assert response.status_code == 405 and response.headers["allow"] == "POST"


def test_no_raw_user_id_reaches_a_log(client: TestClient, caplog) -> None:
    from pipelines.data.privacy import PUBLIC_DEMO_KEY

    raw = "raw-user-31337"
    with caplog.at_level(logging.DEBUG):
        client.post("/recommend", json={"user_id": raw, "k": 2}, headers=AUTH)
        client.post("/events", json={"user_id": raw, "item_id": "7", "timestamp": 9}, headers=AUTH)
        client.post("/recommend", json={"user_id": raw, "k": 101}, headers=AUTH)
    assert raw not in caplog.text
    assert PUBLIC_DEMO_KEY.hex() not in caplog.text


def test_a_raw_id_is_never_stored_without_the_key(service) -> None:
    # without the ingestion key a raw id cannot be mapped: storing it would put a raw
    # identity into artifacts/serving/
    response = asyncio.run(service.events(user_id="raw-42", item_id="7", timestamp=1))
    assert response.status_code == 404
    assert service.state.events("raw-42") == []
    service._key = bytes(range(32))
    assert call(service.events, user_id="raw-42", item_id="7", timestamp=1)["recorded"]
    assert service.state.events("raw-42") == []  # stored under the pseudonym only


def test_the_openapi_document_is_true_and_short(client: TestClient) -> None:
    spec = client.get("/docs.json").json()
    paths = spec["paths"]
    assert {"/recommend", "/recommend/session", "/similar", "/items", "/events"} <= set(paths)
    assert {"/livez", "/readyz", "/metrics", "/model"} <= set(paths)
    assert len(spec["info"]["description"]) < 300  # not the README
    error = spec["components"]["schemas"]["Error"]
    assert error["properties"]["detail"]["anyOf"][0]["type"] == "array"
    assert "409" in paths["/items"]["post"]["responses"]
    assert "404" not in paths["/recommend"]["post"]["responses"]
    body = paths["/similar"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert len(body["oneOf"]) == 2
    assert paths["/recommend"]["post"]["security"] == [{"bearer": []}]


def test_readyz_waits_for_minilm_too(bundle_dir: Path, tmp_path, monkeypatch) -> None:
    # issue 17.10: /readyz was ready before MiniLM loaded; the first text query paid it
    import threading

    import pipelines.features.text as text
    from pipelines.inference.live import SqliteState
    from services.recommender import RecommenderService

    release = threading.Event()

    class SlowEncoder:
        def __init__(self, device: str = "cpu") -> None:
            assert release.wait(30)

        def encode(self, texts):
            raise AssertionError("not called here")

    monkeypatch.setattr(text, "TextEncoder", SlowEncoder)
    service = RecommenderService.inner(
        bundle_dir=bundle_dir, background=True, state=SqliteState(tmp_path / "s.sqlite")
    )
    deadline = time.monotonic() + 30
    while service._bundle is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service._bundle is not None and not service.__is_ready__()  # model in, MiniLM not
    release.set()
    while not service.__is_ready__() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.__is_ready__()


def test_the_guard_answers_503_with_retry_after_while_loading() -> None:
    from services.guard import Guard

    async def app(scope, receive, send):
        raise AssertionError("the API must not run before the worker is ready")

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    guard = Guard(
        app, token=lambda: TOKEN, max_body_bytes=100, known_fields=frozenset(), ready=lambda: False
    )
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/recommend",
        "headers": [(b"authorization", f"Bearer {TOKEN}".encode())],
    }
    asyncio.run(guard(scope, receive, send))
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"5") in sent[0]["headers"]


def test_after_a_long_absence_what_everyone_watched_this_week_comes_first(
    bundle_dir: Path, encoder, tmp_path: Path
) -> None:
    """The card's NowBlend: a user away for a month gets this week's popular film on top."""
    import shutil

    from pipelines.inference.live import SqliteState
    from pipelines.inference.now import NowBlend
    from services.recommender import RecommenderService

    blended = tmp_path / "bundle"
    shutil.copytree(bundle_dir, blended)
    card = json.loads((blended / "card.json").read_text())
    card["now_blend"] = NowBlend((0.0, 0.0, 0.0, 1.0)).to_dict()  # away a week: recent only
    (blended / "card.json").write_text(json.dumps(card))
    service = RecommenderService.inner(
        bundle_dir=blended,
        encoder=encoder,
        background=False,
        state=SqliteState(tmp_path / "live.sqlite"),
    )
    before = call(service.recommend, user_id=KNOWN, k=12)
    unlikely = ids(before)[-1]  # the model's least liked of the unseen films
    month = 1_000_000 + 40 * 86_400  # the tiny users' last events are near t = 1,000,000
    for n in range(30):  # 30 other users watched it this week
        call(
            service.events,
            user_id=f"u_{0xF000 + n:016x}",
            item_id=unlikely,
            timestamp=month - 3_600 * n,
        )
    after = call(service.recommend, user_id=KNOWN, k=3, at=month)
    assert ids(after)[0] == unlikely
    near = call(service.recommend, user_id=KNOWN, k=3, at=1_000_000 + 86_400)  # a day later
    assert ids(near)[0] != unlikely  # within the week: the model's own order (weight 0)
