import math
from importlib import resources

import pytest

from phprof import carbon
from phprof.carbon import CarbonIntensity, UnknownRegion


@pytest.fixture(scope="module")
def table():
    return carbon.load_table()


def test_table_loads_with_countries_world_and_cloud_regions(table):
    kinds = {row.kind for row in table.values()}
    assert kinds == {"country", "world", "cloud"}
    assert sum(row.kind == "country" for row in table.values()) >= 35
    assert sum(row.kind == "cloud" for row in table.values()) >= 20
    for key in ["world", "us", "cn", "in", "fr", "de", "gb", "se", "no", "pl", "au", "ca", "jp", "br", "za", "kr",
                "aws:us-east-1", "aws:us-west-2", "aws:eu-west-1", "aws:eu-central-1", "aws:ap-northeast-1",
                "gcp:us-central1", "gcp:europe-west4", "gcp:europe-north1",
                "azure:eastus", "azure:westeurope", "azure:northeurope"]:
        assert key in table, key
    assert carbon.DEFAULT_REGION in table


def test_every_row_has_a_value_a_year_and_a_source(table):
    for key, row in table.items():
        assert row.key == key
        assert 0 < row.g_co2eq_per_kwh < carbon.MAX_G_PER_KWH, key
        assert 2015 <= row.year <= 2026, key
        assert row.source.strip(), key
        assert row.name.strip(), key


def test_keys_are_unique_lowercase_and_typeable(table):
    text = (resources.files("phprof") / "data" / "carbon_intensity.csv").read_text(encoding="utf-8")
    header, *rows = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert header.startswith("key,")
    keys = [row.split(",", 1)[0] for row in rows]
    assert len(keys) == len(set(keys)) == len(table)
    for key in keys:
        assert key == key.lower() and " " not in key, key


def test_figures_are_in_a_sane_order(table):
    # Low-carbon grids well under coal-heavy ones: a swapped or mistyped figure shows here.
    assert table["fr"].g_co2eq_per_kwh < 100 < table["de"].g_co2eq_per_kwh < table["pl"].g_co2eq_per_kwh
    assert table["se"].g_co2eq_per_kwh < 100 < table["in"].g_co2eq_per_kwh
    assert table["aws:eu-north-1"].g_co2eq_per_kwh < table["aws:eu-central-1"].g_co2eq_per_kwh
    assert 300 < table["world"].g_co2eq_per_kwh < 600


def test_cloud_rows_name_the_grid_they_draw_from(table):
    for row in table.values():
        if row.kind == "cloud" and not row.key.startswith("study:"):
            assert "grid:" in row.source, row.key
            assert row.key.split(":", 1)[0] in {"aws", "gcp", "azure"}, row.key


def test_the_study_figure_is_kept(table):
    row = table["study:aws:us-west-2"]
    assert row.g_co2eq_per_kwh == 297.6
    assert "CodeCarbon" in row.source and "direct" in row.source


def test_lookup_ignores_case_and_spaces():
    assert carbon.lookup("FR") is carbon.lookup("fr")
    assert carbon.lookup(" AWS:US-West-2 ").key == "aws:us-west-2"


def test_load_table_returns_a_copy():
    first = carbon.load_table()
    first.pop("fr")
    assert "fr" in carbon.load_table()


def test_unknown_region_names_close_matches_and_how_to_list():
    with pytest.raises(UnknownRegion) as info:
        carbon.lookup("aws:us-west-3")
    message = str(info.value)
    assert "'aws:us-west-2'" in message
    assert "load_table()" in message
    assert isinstance(info.value, ValueError)


def test_unknown_region_without_provider_offers_each_provider():
    with pytest.raises(UnknownRegion, match=r"'aws:us-west-2'"):
        carbon.lookup("us-west-2")
    with pytest.raises(UnknownRegion, match=r"'gcp:europe-west4'"):
        carbon.lookup("europe-west4")


@pytest.mark.parametrize("typed,meant", [("germany", "de"), ("frnace", "fr"), ("uk", "gb"), ("Azure:WestEurop", "azure:westeurope")])
def test_unknown_region_suggests_by_name_and_common_mistakes(typed, meant):
    with pytest.raises(UnknownRegion, match=f"'{meant}'"):
        carbon.lookup(typed)


def test_custom_intensity():
    given = carbon.custom(123.5)
    assert given.g_co2eq_per_kwh == 123.5 and given.year is None and given.kind == "custom"
    assert carbon.custom(0).g_co2eq_per_kwh == 0.0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, 2000.5, 450_000.0])
def test_custom_rejects_what_no_grid_averages(bad):
    with pytest.raises(ValueError):
        carbon.custom(bad)


def test_energy_units():
    assert carbon.joules_to_kwh(3.6e6) == 1.0
    assert carbon.joules_to_wh(3600.0) == 1.0
    assert carbon.joules_to_wh(7.2e6) == 2000.0


def test_carbon_arithmetic():
    grid = carbon.custom(400.0)
    assert carbon.carbon_g(3.6e6, grid) == pytest.approx(400.0)
    assert carbon.carbon_g(3.6e6, grid, pue=1.5) == pytest.approx(600.0)
    assert carbon.carbon_g(1800.0, grid) == pytest.approx(0.2)  # 0.5 Wh
    assert carbon.carbon_g(0.0, grid) == 0.0
    fr = carbon.lookup("fr")
    assert carbon.carbon_g(7.2e6, fr) == pytest.approx(2 * fr.g_co2eq_per_kwh)


@pytest.mark.parametrize("pue", [0.99, 0.0, -1.0, math.nan, math.inf])
def test_pue_below_one_is_rejected(pue):
    with pytest.raises(ValueError):
        carbon.carbon_g(3.6e6, carbon.custom(400.0), pue=pue)
    with pytest.raises(ValueError):
        carbon.inferences_to_parity(1.0, 3600.0, pue=pue)


def test_negative_energy_is_rejected():
    with pytest.raises(ValueError):
        carbon.carbon_g(-1.0, carbon.custom(400.0))


def test_parity_arithmetic():
    # 1 kWh of training; 3.6 kJ (1 Wh) per inference: 1,000 inferences, 800 at PUE 1.25.
    assert carbon.inferences_to_parity(1.0, 3600.0) == pytest.approx(1000.0)
    assert carbon.inferences_to_parity(1.0, 3600.0, pue=1.25) == pytest.approx(800.0)


@pytest.mark.parametrize("model,kwh_per_inference,parity_millions", [
    ("bigscience/bloomz-7b1", 1.0e-4, 592.6),
    ("bigscience/bloomz-3b", 7.3e-5, 395.6),
    ("bigscience/bloomz-1b7", 6.2e-5, 292.5),
    ("bigscience/bloomz-560m", 5.4e-5, 204.6),
])
def test_parity_reproduces_the_study(model, kwh_per_inference, parity_millions):
    # paper.md, "Training vs inference parity": training + fine-tuning over kWh per inference.
    training = carbon.STUDY_TRAINING_KWH[model] + carbon.STUDY_FINETUNING_KWH[model]
    parity = carbon.inferences_to_parity(training, kwh_per_inference * carbon.JOULES_PER_KWH)
    assert parity / 1e6 == pytest.approx(parity_millions, abs=0.05)


@pytest.mark.parametrize("training,joules", [(0.0, 1.0), (-5.0, 1.0), (1.0, 0.0), (1.0, -2.0), (math.nan, 1.0)])
def test_parity_rejects_non_positive_inputs(training, joules):
    with pytest.raises(ValueError):
        carbon.inferences_to_parity(training, joules)


HEADER = "key,kind,name,g_co2eq_per_kwh,year,source\n"


def test_parse_table_skips_comments_and_reads_rows():
    rows = carbon.parse_table("# a comment, with a comma\n" + HEADER + 'xx,country,X,12.5,2024,"S, 2024"\n')
    assert rows == {"xx": CarbonIntensity("xx", "X", 12.5, 2024, "S, 2024", "country")}


@pytest.mark.parametrize("row", [
    "xx,country,X,-3,2024,S",  # negative
    "xx,country,X,nan,2024,S",  # not a number
    "xx,country,X,2500,2024,S",  # g/MWh or lb/MWh by mistake
    "Xx,country,X,12,2024,S",  # not lowercase
    "xx,region,X,12,2024,S",  # unknown kind
    "xx,country,X,12,2024,",  # no source
    "xx,country,X,12,,S",  # no year
    "xx,country,X,12,2024,S\nxx,country,X,13,2024,S",  # twice
])
def test_parse_table_rejects_bad_rows(row):
    with pytest.raises(ValueError):
        carbon.parse_table(HEADER + row + "\n")


def test_parse_table_rejects_a_wrong_header():
    with pytest.raises(ValueError, match="header"):
        carbon.parse_table("key,name,value\nxx,X,12\n")
