"""The research API (research-api.md, mounted at /api/v1/research/batteries) on both databases:
real ``.mat`` files from ../shared/data uploaded over multipart, the reference's bodies field by
field, its error codes, roles, and hostile uploads that must leave nothing behind."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from central.api.extensions import db
from central.db.models import ResearchBattery, ResearchCycle
from central.research import early_life
from central.settings import ResearchSettings
from tests.central.api_support import (
    TIMESTAMP,
    add_user,
    assert_error,
    logged_in,
    make_app,
)
from tests.central.research.support import v73_battery, v73_bomb
from tests.support import SHARED_DATA

DATA = SHARED_DATA
NASA = sorted((DATA / "nasa_pcoe").glob("*.mat"))
SEVERSON = sorted((DATA / "severson").glob("*.mat"))
TABLE_ONLY = DATA / "negative" / "matlab_table_only.mat"
ROOT = "/api/v1/research/batteries"
BATTERY_FIELDS = [
    "id",
    "filename",
    "total_cycles",
    "nominal_capacity",
    "manufacturer",
    "chemistry",
    "created_at",
    "updated_at",
]
CYCLE_FIELDS = [
    "id",
    "battery_id",
    "cycle_index",
    "voltage",
    "current",
    "temperature",
    "soh",
    "rul",
]


@pytest.fixture
def upload_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir()
    return folder


@pytest.fixture
def app(migrated_url: str, upload_dir: Path) -> Flask:
    for user, role in (("admin", "admin"), ("engineer1", "engineer"), ("viewer1", "viewer")):
        add_user(migrated_url, user, role)
    research = ResearchSettings(upload_dir=upload_dir)
    app = make_app(migrated_url, BRM_RESEARCH=research, BRM_RESEARCH_UPLOAD_DIR=upload_dir)
    yield app
    db.engine(app).dispose()


@pytest.fixture
def as_user(client: FlaskClient) -> Callable[[str], dict[str, str]]:
    return logged_in(client)


@pytest.fixture
def engineer(as_user) -> dict[str, str]:
    return as_user("engineer1")


@pytest.fixture
def viewer(as_user) -> dict[str, str]:
    return as_user("viewer1")


def upload(client: FlaskClient, headers: dict, data: bytes | Path, name: str = "x.mat", **form):
    """A multipart POST, encoded in memory (werkzeug's builder would leave a temporary file open
    for a large body)."""
    content = data.read_bytes() if isinstance(data, Path) else data
    fields = {
        "file": FileStorage(io.BytesIO(content), name),
        **{k: str(v) for k, v in form.items()},
    }
    boundary, body = encode_multipart(fields)
    kind = f"multipart/form-data; boundary={boundary}"
    return client.post(ROOT, headers=headers, data=body, content_type=kind)


def stored(app: Flask) -> tuple[int, int]:
    """How many research batteries and cycles the store holds."""
    with app.app_context():
        batteries = db.session.scalar(select(func.count()).select_from(ResearchBattery))
        cycles = db.session.scalar(select(func.count()).select_from(ResearchCycle))
        return batteries, cycles


def all_cycles(client: FlaskClient, headers: dict, battery_id: int) -> list[dict]:
    items, page = [], 1
    while True:
        body = client.get(f"{ROOT}/{battery_id}/cycles?page={page}&page_size=100", headers=headers)
        assert body.status_code == 200, body.get_json()
        items += body.get_json()["items"]
        if page >= body.get_json()["meta"]["total_pages"]:
            return items
        page += 1


def nasa_discharges(path: Path) -> list:
    """The discharge runs of a NASA PCoE file, read directly with scipy."""
    mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    (name,) = [k for k in mat if not k.startswith("__")]
    return [c for c in np.atleast_1d(mat[name].cycle) if c.type == "discharge"]


def sane_capacity(data) -> float | None:
    """The data README's rule for a 2.0 Ah cell: the file's Capacity if a cell could deliver it
    (0.02–2.5 Ah), else the charge counted from |current| over time (at least 10 samples) if that
    is plausible, else nothing."""

    def plausible(value: float) -> bool:
        return math.isfinite(value) and 0.02 <= value <= 2.5

    capacity = np.atleast_1d(np.asarray(data.Capacity, dtype=float))
    if capacity.size == 1 and plausible(capacity[0]):
        return float(capacity[0])
    time, current = np.atleast_1d(data.Time), np.atleast_1d(data.Current_measured)
    if time.size < 10:
        return None
    counted = float(np.trapezoid(np.abs(current), time)) / 3600.0
    return counted if plausible(counted) else None


def first_crossing_rul(indices: list[int], soh: list[float | None], threshold: float) -> list:
    below = (i for i, s in zip(indices, soh, strict=True) if s is not None and s < threshold)
    crossing = next(below, None)
    return [None if crossing is None else max(crossing - i, 0) for i in indices]


# --- real files --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", NASA, ids=lambda p: p.stem)
def test_every_nasa_file_uploads_with_its_discharge_cycles_and_labels(
    client: FlaskClient, engineer, path: Path
) -> None:
    response = upload(client, engineer, path, path.name, manufacturer="NASA Ames")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert list(body)[: len(BATTERY_FIELDS)] == BATTERY_FIELDS
    discharges = nasa_discharges(path)
    assert body["filename"] == path.name
    assert body["total_cycles"] == len(discharges)
    assert body["nominal_capacity"] == 2.0
    assert body["manufacturer"] == "NASA Ames"
    assert body["layout"] == "nasa_pcoe"
    assert body["cell_label"] == path.stem
    assert TIMESTAMP.match(body["created_at"]) and TIMESTAMP.match(body["updated_at"])
    assert [c["id"] for c in body["cells"]] == [body["id"]]
    assert response.headers["Content-Type"].startswith("application/json")

    cycles = all_cycles(client, engineer, body["id"])
    assert [c["cycle_index"] for c in cycles] == list(range(1, len(discharges) + 1))
    expected_soh = []
    for cycle, run in zip(cycles, discharges, strict=True):
        assert list(cycle)[: len(CYCLE_FIELDS)] == CYCLE_FIELDS
        capacity = sane_capacity(run.data)
        expected_soh.append(None if capacity is None else capacity / 2.0)
        voltage = np.atleast_1d(run.data.Voltage_measured)
        assert np.allclose(cycle["voltage"], voltage, equal_nan=True)
        assert len(cycle["current"]) == len(cycle["temperature"]) == voltage.size
        assert cycle["ambient_temperature"] == float(run.ambient_temperature)
    got_soh = [c["soh"] for c in cycles]
    for got, want in zip(got_soh, expected_soh, strict=True):
        assert (got is None) == (want is None) and (got is None or math.isclose(got, want))
    assert [c["rul"] for c in cycles] == first_crossing_rul(
        [c["cycle_index"] for c in cycles], got_soh, 0.8
    )


@pytest.mark.parametrize("path", SEVERSON, ids=lambda p: p.stem)
def test_severson_batch_files_give_one_dataset_per_cell(
    client: FlaskClient, engineer, app: Flask, path: Path
) -> None:
    response = upload(client, engineer, path, path.name)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    with h5py.File(path, "r") as f:
        batch = f["batch"]
        n_cells = batch["cycle_life"].shape[0]
        lives = [int(f[batch["cycle_life"][k, 0]][()].item()) for k in range(n_cells)]
        summary = f[batch["summary"][3, 0]]
        cycle4 = summary["cycle"][()].ravel().astype(int)
        capacity4 = summary["QDischarge"][()].ravel()
        grid = f[batch["Vdlin"][3, 0]][()].ravel()
        qdlin = f[batch["cycles"][3, 0]]["Qdlin"]
        curves = {n: f[qdlin[n - 1, 0]][()].ravel() for n in early_life.CURVE_CYCLES}
    assert len(body["cells"]) == n_cells == (41 if "train" in path.name else 43)
    assert {c["layout"] for c in body["cells"]} == {"severson_batch"}
    assert [c["stated_cycle_life"] for c in body["cells"]] == lives
    assert [c["cell_index"] for c in body["cells"]] == list(range(1, n_cells + 1))
    assert {c["nominal_capacity"] for c in body["cells"]} == {1.1}
    assert {c["chemistry"] for c in body["cells"]} == {"LFP"}
    assert stored(app)[0] == n_cells

    fourth = body["cells"][3]
    assert fourth["total_cycles"] == cycle4.size
    cycles = all_cycles(client, engineer, fourth["id"])
    assert [c["cycle_index"] for c in cycles] == cycle4.tolist()
    assert np.allclose([c["soh"] for c in cycles], capacity4 / 1.1)
    assert [c["rul"] for c in cycles] == [lives[3] - int(n) for n in cycle4]
    assert len(cycles[0]["voltage"]) == len(cycles[0]["discharge_capacity"]) == 1000
    assert cycles[0]["voltage"][0] == pytest.approx(3.6) and cycles[0]["voltage"][-1] == 2.0

    # Early-life prediction: the shipped model on features computed here from the file itself.
    response = client.get(f"{ROOT}/{fourth['id']}/prediction", headers=engineer)
    assert response.status_code == 200, response.get_json()
    prediction = response.get_json()
    capacities = dict(zip(cycle4.tolist(), capacity4.tolist(), strict=True))
    expected = early_life.predict(early_life.features(curves, capacities, grid))
    assert prediction["battery_id"] == fourth["id"] and prediction["as_of_cycle"] == 100
    assert prediction["model"] == expected.model
    assert prediction["predicted_cycle_life"] == pytest.approx(expected.cycle_life)
    assert prediction["predicted_rul"] == pytest.approx(expected.cycle_life - 100)
    assert prediction["features"] == pytest.approx(expected.features)
    low, high = expected.interval
    assert prediction["interval"] == pytest.approx(
        {"low": low, "high": high, "level": expected.interval_level}
    )
    assert low < prediction["predicted_cycle_life"] < high
    assert prediction["actual_cycle_life"] == lives[3]
    assert prediction["error_cycles"] == pytest.approx(expected.cycle_life - lives[3])


def test_prediction_needs_100_cycles_with_curves(
    client: FlaskClient, engineer, tmp_path: Path
) -> None:
    nasa = upload(client, engineer, NASA[0], NASA[0].name).get_json()
    response = client.get(f"{ROOT}/{nasa['id']}/prediction", headers=engineer)
    body = response.get_json()
    assert response.status_code == 422 and body["error"]["code"] == "VALIDATION_ERROR"
    assert f"cycle {nasa['total_cycles']}" in body["error"]["message"]
    long = generic_file(tmp_path, list(np.linspace(1.0, 0.85, 120)), "long.mat")
    generic = upload(client, engineer, long, long.name, nominal_capacity=1.0).get_json()
    response = client.get(f"{ROOT}/{generic['id']}/prediction", headers=engineer)
    assert response.status_code == 422
    assert "curve" in response.get_json()["error"]["message"]
    missing = client.get(f"{ROOT}/999/prediction", headers=engineer)
    assert_error(missing, 404, "Battery with ID 999 not found", "RESOURCE_NOT_FOUND")


def test_table_only_file_is_a_400_with_details_and_stores_nothing(
    client: FlaskClient, engineer, app: Flask, upload_dir: Path
) -> None:
    response = upload(client, engineer, TABLE_ONLY, TABLE_ONLY.name)
    body = assert_error(response, 400, "Unable to parse .mat file", "INVALID_FILE_FORMAT")
    assert body["error"]["details"] and body["error"]["details"][0]["field"] == "file"
    assert all(d["issue"] for d in body["error"]["details"])
    assert stored(app) == (0, 0)
    assert list(upload_dir.iterdir()) == []


def absurd_dataset(path: Path) -> None:
    v73_battery(path, shape=(10**9, 10**6), chunks=(1000, 1000), compression="gzip")


def _written(folder: Path, write: Callable[[Path], None]) -> bytes:
    path = folder / "hostile.mat"
    write(path)
    assert path.stat().st_size < 200_000  # small on disk, enormous once read
    return path.read_bytes()


def _v73_header(claims: str = "7.3") -> bytes:
    text = f"MATLAB {claims} MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5"
    return text.encode().ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda _: NASA[0].read_bytes()[:40_000], id="truncated-v5"),
        pytest.param(lambda _: SEVERSON[0].read_bytes()[:300_000], id="truncated-v73"),
        pytest.param(lambda _: np.random.default_rng(1).bytes(50_000), id="random-bytes"),
        pytest.param(lambda _: b"battery,capacity\n1,2.0\n" * 100, id="csv-renamed"),
        pytest.param(lambda _: _v73_header() + b"\x00" * 4096, id="v73-header-not-hdf5"),
        pytest.param(lambda _: b"", id="empty"),
        pytest.param(lambda tmp: _written(tmp, absurd_dataset), id="hdf5-absurd-dimensions"),
        pytest.param(lambda tmp: _written(tmp, v73_bomb), id="hdf5-compression-bomb"),
    ],
)
def test_hostile_uploads_get_400_and_leave_nothing(
    client: FlaskClient, engineer, app: Flask, upload_dir: Path, tmp_path: Path, make
) -> None:
    response = upload(client, engineer, make(tmp_path), "cell.mat")
    body = assert_error(response, 400, "Unable to parse .mat file", "INVALID_FILE_FORMAT")
    assert body["error"]["details"][0]["field"] == "file"
    assert stored(app) == (0, 0)
    assert list(upload_dir.iterdir()) == []


def test_a_reader_out_of_memory_or_time_is_a_400_and_the_server_goes_on(
    client: FlaskClient, engineer, app: Flask, upload_dir: Path, tmp_path: Path
) -> None:
    """Each upload is read in a child process with an address-space limit and a deadline."""
    big = tmp_path / "big.mat"
    scipy.io.savemat(big, {"x": np.zeros(300 * 1024**2 // 8)}, do_compression=True)
    assert big.stat().st_size < 2 * 1024**2  # small on disk, 300 MB once read
    app.config["BRM_RESEARCH"] = ResearchSettings(parse_memory_bytes=256 * 1024**2)
    response = upload(client, engineer, big, big.name)
    body = assert_error(response, 400, "Unable to parse .mat file", "INVALID_FILE_FORMAT")
    assert body["error"]["details"] == [
        {"field": "file", "issue": "reading the file needs more than 256 MiB"}
    ]
    app.config["BRM_RESEARCH"] = ResearchSettings(parse_timeout_s=0.001)
    response = upload(client, engineer, NASA[0], NASA[0].name)
    body = assert_error(response, 400, "Unable to parse .mat file", "INVALID_FILE_FORMAT")
    assert body["error"]["details"] == [
        {"field": "file", "issue": "reading the file took longer than 0.001 s"}
    ]
    assert stored(app) == (0, 0)
    app.config["BRM_RESEARCH"] = ResearchSettings(upload_dir=upload_dir)
    assert upload(client, engineer, NASA[0], NASA[0].name).status_code == 201


def test_a_file_failing_in_a_later_cell_stores_none_of_it(
    client: FlaskClient, engineer, app: Flask, tmp_path: Path
) -> None:
    """Two generic-layout cells, the second inconsistent: the first is rolled back too."""
    good = {"cycle_index": np.arange(1, 4.0), "capacity_ah": np.array([1.0, 0.9, 0.7])}
    bad = {"cycle_index": np.arange(1, 4.0), "capacity_ah": np.array([1.0, 0.9])}
    cells = np.empty((1, 2), dtype=[("cycle_index", object), ("capacity_ah", object)])
    cells[0, 0] = (good["cycle_index"], good["capacity_ah"])
    cells[0, 1] = (bad["cycle_index"], bad["capacity_ah"])
    path = tmp_path / "two.mat"
    scipy.io.savemat(path, {"battery": cells})
    response = upload(client, engineer, path, "two.mat", nominal_capacity=1.0)
    assert_error(response, 400, "Unable to parse .mat file", "INVALID_FILE_FORMAT")
    assert stored(app) == (0, 0)


def test_over_100_mb_is_a_413_envelope(
    client: FlaskClient, engineer, app: Flask, upload_dir: Path
) -> None:
    response = upload(client, engineer, b"\x00" * (100 * 1024 * 1024 + 1), "big.mat")
    body = assert_error(response, 413, "File too large (maximum 100 MB)", "PAYLOAD_TOO_LARGE")
    assert body["error"]["details"][0]["field"] == "file"
    assert stored(app) == (0, 0)
    assert list(upload_dir.iterdir()) == []


def test_the_limit_is_a_setting(client: FlaskClient, engineer, app: Flask) -> None:
    app.config["BRM_RESEARCH"] = ResearchSettings(max_upload_bytes=2 * 1024 * 1024)
    response = upload(client, engineer, b"\x00" * (2 * 1024 * 1024), "big.mat")
    assert_error(response, 413, "File too large (maximum 2 MB)", "PAYLOAD_TOO_LARGE")


# --- the rest of the contract, on a small generic file -----------------------------------------


def generic_file(tmp_path: Path, capacities: list[float], name: str = "cell.mat") -> Path:
    """One cell in the README's generic layout, with a few samples per cycle."""
    n = len(capacities)
    voltage = np.empty(n, dtype=object)
    for k in range(n):
        voltage[k] = np.linspace(4.2, 3.0, 5)
    path = tmp_path / name
    scipy.io.savemat(
        path,
        {
            "battery": {
                "cycle_index": np.arange(1, n + 1, dtype=float),
                "capacity_ah": np.array(capacities),
                "voltage": voltage,
                "label": "cell-A",
            }
        },
    )
    return path


@pytest.fixture
def datasets(client: FlaskClient, engineer, tmp_path: Path) -> list[dict]:
    """Three single-cell uploads: two by 'Acme', one by 'Other'."""
    made = []
    for n, maker in enumerate(["Acme", "Other", "Acme"]):
        path = generic_file(tmp_path, [1.0, 0.95, 0.85, 0.75, 0.7], f"cell{n}.mat")
        response = upload(
            client,
            engineer,
            path,
            path.name,
            manufacturer=maker,
            chemistry="NMC",
            nominal_capacity=1.0,
        )
        assert response.status_code == 201, response.get_json()
        made.append(response.get_json())
    return made


def test_list_pages_and_filters(client: FlaskClient, viewer, datasets) -> None:
    body = client.get(ROOT, headers=viewer).get_json()
    assert body["meta"] == {"page": 1, "page_size": 20, "total": 3, "total_pages": 1}
    assert [item["id"] for item in body["items"]] == [d["id"] for d in datasets]
    assert list(body["items"][0])[: len(BATTERY_FIELDS)] == BATTERY_FIELDS
    page2 = client.get(f"{ROOT}?page=2&page_size=2", headers=viewer).get_json()
    assert page2["meta"] == {"page": 2, "page_size": 2, "total": 3, "total_pages": 2}
    assert [item["id"] for item in page2["items"]] == [datasets[2]["id"]]
    past = client.get(f"{ROOT}?page=9", headers=viewer).get_json()
    assert past["items"] == [] and past["meta"]["total"] == 3
    acme = client.get(f"{ROOT}?manufacturer=Acme", headers=viewer).get_json()
    assert [i["manufacturer"] for i in acme["items"]] == ["Acme", "Acme"]
    assert acme["meta"]["total"] == 2


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=0", "page"),
        ("page_size=101", "page_size"),
        ("page_size=0", "page_size"),
        ("page=x", "page"),
    ],
)
def test_list_parameter_bounds(client: FlaskClient, viewer, query: str, field: str) -> None:
    body = client.get(f"{ROOT}?{query}", headers=viewer).get_json()
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert body["error"]["details"][0]["field"] == field


def test_detail_and_not_found(client: FlaskClient, viewer, datasets) -> None:
    first = datasets[0]
    detail = client.get(f"{ROOT}/{first['id']}", headers=viewer).get_json()
    assert detail == {k: v for k, v in first.items() if k != "cells"}
    for missing in ("999", "abc", str(2**40)):
        response = client.get(f"{ROOT}/{missing}", headers=viewer)
        assert_error(response, 404, f"Battery with ID {missing} not found", "RESOURCE_NOT_FOUND")


def test_cycles_page_filter_and_labels(client: FlaskClient, viewer, datasets) -> None:
    battery_id = datasets[0]["id"]
    body = client.get(f"{ROOT}/{battery_id}/cycles?page_size=2", headers=viewer).get_json()
    assert body["meta"] == {"page": 1, "page_size": 2, "total": 5, "total_pages": 3}
    first = body["items"][0]
    assert list(first)[: len(CYCLE_FIELDS)] == CYCLE_FIELDS
    assert first["battery_id"] == battery_id
    assert first["voltage"] == pytest.approx(np.linspace(4.2, 3.0, 5).tolist())
    every = all_cycles(client, viewer, battery_id)
    assert [c["soh"] for c in every] == pytest.approx([1.0, 0.95, 0.85, 0.75, 0.7])
    assert [c["rul"] for c in every] == [3, 2, 1, 0, 0]
    one = client.get(f"{ROOT}/{battery_id}/cycles?cycle_index=3", headers=viewer).get_json()
    assert [c["cycle_index"] for c in one["items"]] == [3] and one["meta"]["total"] == 1
    response = client.get(f"{ROOT}/999/cycles", headers=viewer)
    assert_error(response, 404, "Battery with ID 999 not found", "RESOURCE_NOT_FOUND")


def test_cycles_without_arrays_leave_the_blobs_unread(
    app: Flask, client: FlaskClient, viewer, datasets
) -> None:
    path = f"{ROOT}/{datasets[0]['id']}/cycles"
    full = client.get(path, headers=viewer).get_json()
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    engine = db.engine(app)
    event.listen(engine, "before_cursor_execute", record)
    try:
        light = client.get(path, query_string={"arrays": "false"}, headers=viewer).get_json()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    arrays = ("voltage", "current", "temperature", "time", "discharge_capacity")
    assert light["meta"] == full["meta"]
    for lean, whole in zip(light["items"], full["items"], strict=True):
        assert list(lean) == list(whole)
        assert all(lean[key] == [] for key in arrays)
        assert {k: v for k, v in lean.items() if k not in arrays} == {
            k: v for k, v in whole.items() if k not in arrays
        }
    assert any(whole["voltage"] for whole in full["items"])
    cycle_reads = [s for s in statements if "FROM research_cycles" in s and "count(" not in s]
    assert cycle_reads and not any("research_cycles.voltage" in s for s in cycle_reads)


def test_patch_updates_metadata_and_relabels(client: FlaskClient, engineer, datasets) -> None:
    battery = datasets[0]
    path = f"{ROOT}/{battery['id']}"
    response = client.patch(
        path, headers=engineer, json={"manufacturer": "Updated Manufacturer", "chemistry": "LFP"}
    )
    body = response.get_json()
    assert response.status_code == 200
    assert body["manufacturer"] == "Updated Manufacturer" and body["chemistry"] == "LFP"
    assert body["nominal_capacity"] == 1.0 and body["created_at"] == battery["created_at"]
    assert body["updated_at"] >= battery["updated_at"]
    # A larger nominal capacity lowers every SoH; a lower threshold moves the crossing.
    client.patch(path, headers=engineer, json={"nominal_capacity": 1.25, "eol_threshold": 0.6})
    cycles = all_cycles(client, engineer, battery["id"])
    assert [c["soh"] for c in cycles] == pytest.approx([0.8, 0.76, 0.68, 0.6, 0.56])
    assert [c["rul"] for c in cycles] == [4, 3, 2, 1, 0]
    refused = client.patch(path, headers=engineer, json={"nominal_capacity": None})
    assert refused.get_json()["error"]["details"][0]["field"] == "nominal_capacity"
    assert refused.status_code == 422
    negative = client.patch(path, headers=engineer, json={"nominal_capacity": -1})
    assert negative.status_code == 422
    response = client.patch(f"{ROOT}/999", headers=engineer, json={"chemistry": "NMC"})
    assert_error(response, 404, "Battery with ID 999 not found", "RESOURCE_NOT_FOUND")


def test_delete_removes_the_dataset_and_its_cycles(
    client: FlaskClient, engineer, app: Flask, datasets
) -> None:
    battery_id = datasets[1]["id"]
    response = client.delete(f"{ROOT}/{battery_id}", headers=engineer)
    assert response.status_code == 204 and response.data == b""
    assert stored(app) == (2, 10)
    assert client.get(f"{ROOT}/{battery_id}", headers=engineer).status_code == 404
    again = client.delete(f"{ROOT}/{battery_id}", headers=engineer)
    assert_error(again, 404, f"Battery with ID {battery_id} not found", "RESOURCE_NOT_FOUND")


def test_viewers_read_but_do_not_upload_edit_or_delete(
    client: FlaskClient, viewer, datasets, tmp_path: Path
) -> None:
    battery_id = datasets[0]["id"]
    assert client.get(f"{ROOT}/{battery_id}/cycles", headers=viewer).status_code == 200
    refused = [
        upload(client, viewer, generic_file(tmp_path, [1.0]), "v.mat", nominal_capacity=1),
        client.patch(f"{ROOT}/{battery_id}", headers=viewer, json={"chemistry": "NMC"}),
        client.delete(f"{ROOT}/{battery_id}", headers=viewer),
    ]
    for response in refused:
        assert_error(response, 403, "Engineer access required", "FORBIDDEN")
    unauthenticated = client.get(ROOT)
    assert_error(unauthenticated, 401, "Could not validate credentials", "UNAUTHORIZED")


def test_upload_form_validation(client: FlaskClient, engineer, app: Flask, tmp_path) -> None:
    no_file = client.post(
        ROOT, headers=engineer, data={"manufacturer": "x"}, content_type="multipart/form-data"
    )
    assert no_file.status_code == 422
    assert no_file.get_json()["error"]["details"][0]["field"] == "file"
    path = generic_file(tmp_path, [1.0, 0.9])
    for form in ({"nominal_capacity": "-1"}, {"nominal_capacity": "abc"}, {"eol_threshold": "1.5"}):
        response = upload(client, engineer, path, "c.mat", **form)
        assert response.status_code == 422, form
        assert response.get_json()["error"]["code"] == "VALIDATION_ERROR"
    assert stored(app) == (0, 0)


def test_the_nasa_capacity_csv_agrees_with_first_crossings() -> None:
    """The data README's crossing cycles (1.4 Ah, i.e. SoH 0.7 of 2.0 Ah) from its own CSV, through
    the same labelling as the API: B0005 at 125, B0006 at 109, B0018 at 97, B0007 never."""
    from central.research.labels import rul_labels

    (table,) = (DATA / "nasa_pcoe_capacity").glob("*.csv")
    rows = list(csv.DictReader(table.read_text().splitlines()))
    expected = {"B0005": 125, "B0006": 109, "B0018": 97, "B0007": None}
    for battery, crossing in expected.items():
        mine = [r for r in rows if r["battery"] == battery]
        indices = [int(r["discharge_cycle"]) for r in mine]
        soh = [float(r["capacity_Ah"]) / 2.0 for r in mine]
        labels = rul_labels(indices, soh, 0.7)
        if crossing is None:
            assert set(labels) == {None}
        else:
            assert labels[indices.index(1)] == crossing - 1
            assert labels[indices.index(crossing)] == 0
