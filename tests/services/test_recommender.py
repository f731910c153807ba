"""The service class with a tiny trained model: answers, cold start, new items, cache,
and, through its ASGI app (the full middleware stack, no socket), auth and bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.inference.tiny import USERS
from tests.services.conftest import TOKEN

KNOWN = USERS[0]  # watches the animation group, then one action film
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def service(bundle_dir: Path, encoder):
    from services.recommender import RecommenderService

    return RecommenderService.inner(bundle_dir=bundle_dir, encoder=encoder, background=False)


# -- the class itself ------------------------------------------------------------------------


def test_known_user_gets_unseen_items_with_reasons(service) -> None:
    bundle = service._bundle
    seen = {bundle.catalogue.item_ids[i] for i in bundle.users.items[bundle.users.index[KNOWN]]}
    answer = service.recommend(user_id=KNOWN, k=5)
    assert not answer.fallback and len(answer.items) == 5
    assert not seen & {item.item_id for item in answer.items}  # exclude_seen by default
    assert all(item.reason for item in answer.items)  # every pick names history items
    assert all(reason.item_id in seen for item in answer.items for reason in item.reason)
    scores = [item.score for item in answer.items]
    assert scores == sorted(scores, reverse=True)
    with_seen = service.recommend(user_id=KNOWN, k=12, exclude_seen=False)
    assert seen <= {item.item_id for item in with_seen.items}


def test_unknown_user_falls_back_to_popularity(service) -> None:
    answer = service.recommend(user_id="u_ffffffffffffffff", k=3)
    assert answer.fallback
    popularity = service._bundle.catalogue.popularity
    assert [item.score for item in answer.items] == sorted(popularity, reverse=True)[:3]


def test_session_with_no_events_and_with_duplicates(service) -> None:
    empty = service.recommend_session(history=[], k=4)
    assert len(empty.items) == 4 and not empty.fallback
    from services.recommender import Event, Profile

    events = [Event(item_id="4", timestamp=10), Event(item_id="4", timestamp=20)]
    once = service.recommend_session(history=events[:1], k=11)
    twice = service.recommend_session(history=events, k=11)
    assert "4" not in {item.item_id for item in twice.items}
    assert [i.item_id for i in once.items] == [i.item_id for i in twice.items]
    unknown = service.recommend_session(
        history=[Event(item_id="nope", timestamp=1)], profile=Profile(gender="F"), k=3
    )
    assert unknown.ignored_events == 1 and len(unknown.items) == 3


def test_similar_by_item_and_by_text(service) -> None:
    by_item = service.similar(item_id="7", k=3)  # Alien
    assert "7" not in {i.item_id for i in by_item.items}
    assert by_item.items[0].item_id in {"8", "9"}  # the other science fiction films
    by_text = service.similar(text="a romantic period drama", k=3)
    assert {i.item_id for i in by_text.items} & {"10", "11", "12"}


def test_added_item_is_found_and_recommended_without_retraining(service) -> None:
    before = service.recommend_session(history=[], k=12)
    assert "space-1" not in {i.item_id for i in before.items}
    added = service.items(
        item_id="space-1", title="Space Pirates of Andromeda", year=2024, genres=["Sci-Fi"]
    )
    assert added.recommendable and added.catalogue_size == 13
    found = service.similar(text="space pirates", k=3)
    assert found.items[0].item_id == "space-1"
    from services.recommender import Event

    after = service.recommend_session(history=[Event(item_id="8", timestamp=5)], k=12)
    assert "space-1" in {i.item_id for i in after.items}  # scored from its text alone
    assert after.model_version.endswith("+1items")


def test_cache_hits_and_invalidation(service) -> None:
    first = service.recommend(user_id=KNOWN, k=3)
    assert service.recommend(user_id=KNOWN, k=3) is first
    assert service.cache.hits == 1 and service.cache.misses == 1
    service.items(item_id="new-2", title="Brand New Film", genres=["Drama"])
    assert service.recommend(user_id=KNOWN, k=3) is not first  # the catalogue changed
    bundle = service._bundle
    bundle.card = {**bundle.card, "version": "tiny:2"}
    cached = service.recommend(user_id=KNOWN, k=3)
    service.swap(bundle)  # a new champion
    assert len(service.cache) == 0
    assert service.recommend(user_id=KNOWN, k=3) is not cached
    assert "recops_cache_hit_rate" in service.__metrics__("")


def test_metrics_name_the_model_version_and_count_requests(service) -> None:
    service.recommend(user_id=KNOWN, k=2)
    text = service.__metrics__("# bentoml metrics\n")
    assert 'recops_model_info{name="fusion_transformer",version="tiny:1"' in text
    assert 'recops_requests_total{endpoint="recommend",status="200"} 1' in text
    assert 'recops_request_latency_seconds_count{endpoint="recommend"} 1' in text


def test_raw_ids_are_pseudonymised_with_the_ingestion_key(service) -> None:
    from pipelines.data.privacy import pseudonymise_id

    key = bytes(range(32))
    service._key = key
    assert service.pseudonym("42") == pseudonymise_id("42", key)
    assert service.pseudonym(KNOWN) == KNOWN  # pseudonyms pass through


def test_int8_serving_keeps_the_ranking_close(bundle_dir: Path, encoder) -> None:
    from services.recommender import RecommenderService

    plain = RecommenderService.inner(bundle_dir=bundle_dir, encoder=encoder, background=False)
    small = RecommenderService.inner(
        bundle_dir=bundle_dir, encoder=encoder, quantization="int8", background=False
    )
    a = [i.item_id for i in plain.recommend(user_id=KNOWN, k=3).items]
    b = [i.item_id for i in small.recommend(user_id=KNOWN, k=3).items]
    assert a[0] == b[0]


# -- through the ASGI app: auth, limits, every bad input class -------------------------------


@pytest.fixture(scope="module")
def client(bundle_dir: Path):
    monkey = pytest.MonkeyPatch()
    monkey.setenv("RECOPS_API_TOKEN", TOKEN)
    monkey.setenv("RECOPS_BUNDLE_DIR", str(bundle_dir))
    from services.recommender import RecommenderService

    with TestClient(RecommenderService.to_asgi(), raise_server_exceptions=False) as test_client:
        for _ in range(100):
            if test_client.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        yield test_client
    monkey.undo()


def test_probes_are_open_and_apis_need_the_token(client: TestClient) -> None:
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    body = {"user_id": KNOWN, "k": 2}
    assert client.post("/recommend", json=body).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert client.post("/recommend", json=body, headers=wrong).status_code == 401
    basic = {"Authorization": f"Basic {TOKEN}"}
    assert client.post("/recommend", json=body, headers=basic).status_code == 401
    assert client.get("/model").status_code == 401
    assert client.post("/recommend", json=body, headers=AUTH).status_code == 200
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
]


@pytest.mark.parametrize(("path", "body"), BAD)
def test_bad_input_is_a_4xx_that_echoes_nothing(client: TestClient, path: str, body) -> None:
    response = client.post(path, json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert SECRET not in response.text and "Traceback" not in response.text
    payload = response.json()
    assert payload["error"] == "invalid request" and payload["detail"]


def test_malformed_json_oversize_and_wrong_media_type(client: TestClient) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    bad = client.post("/recommend", content=b'{"user_id": "' + SECRET.encode(), headers=headers)
    assert bad.status_code == 400 and SECRET not in bad.text
    big = client.post("/recommend", content=b" " * 70_000, headers=headers)
    assert big.status_code == 413
    form = client.post(
        "/recommend", content=b"user_id=1", headers={**AUTH, "content-type": "text/plain"}
    )
    assert form.status_code == 415


def test_unknown_item_is_404_without_echo(client: TestClient) -> None:
    response = client.post("/similar", json={"item_id": "nope-" + "x" * 10}, headers=AUTH)
    assert response.status_code == 404
    assert "nope" not in response.text


def test_duplicate_new_item_is_409(client: TestClient) -> None:
    body = {"item_id": "dup-1", "title": "Duplicate Film"}
    assert client.post("/items", json=body, headers=AUTH).status_code == 200
    assert client.post("/items", json=body, headers=AUTH).status_code == 409


def test_openapi_lists_every_endpoint(client: TestClient) -> None:
    paths = set(client.get("/docs.json").json()["paths"])
    assert {"/recommend", "/recommend/session", "/similar", "/items", "/model"} <= paths
    assert {"/livez", "/readyz", "/metrics"} <= paths
    assert json.dumps(client.get("/docs.json").json())  # serialisable
