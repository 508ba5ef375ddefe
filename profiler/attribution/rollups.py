"""What a reader wants from a run's results: per inference, per 1,000, per token,
per image, per step, carbon and the study's training parity.

:func:`rollups` derives them from :class:`phprof.store.results.Results` for any
grid intensity and PUE, so the stored results serve every report.
"""
from __future__ import annotations

from .. import carbon
from ..energy import Energy
from ..store.results import Carbon, Results, Rollups


def study_training_kwh(model: str | None) -> float | None:
    """The study's published training + fine-tuning energy of one of its BLOOMz
    models (the default of the training parity), None for any other model."""
    if model not in carbon.STUDY_TRAINING_KWH:
        return None
    return carbon.STUDY_TRAINING_KWH[model] + carbon.STUDY_FINETUNING_KWH.get(model, 0.0)


def rollups(results: Results, intensity: carbon.CarbonIntensity, pue: float = 1.0,
            training_kwh: float | None = None) -> Rollups:
    """Per inference, per 1,000 inferences, per token, per image, per step, and
    carbon, from a run's results. Energies are the device's whole draw (idle
    included, the pauses between inferences not); ``pue`` scales the carbon and the
    training parity to the facility's, the energies stay the device's. With a
    measurement pass (the profiler off), every energy is the profiled split scaled
    to it (:meth:`Results.scaled_split`): the run without the profiler's own cost, its range
    widened by the measurement pass's own bound."""
    n = results.inferences
    total = results.scaled_split(results.inferences_energy)
    per_inf = total.scaled(1 / n)
    per_k = total.scaled(1000 / n)

    def grams(joules):
        return None if joules is None else carbon.carbon_g(joules, intensity, pue)

    out = {
        "per_inference": per_inf,
        "per_1000": per_k,
        "pue": pue,
        "carbon": Carbon(intensity.key, intensity.name, intensity.g_co2eq_per_kwh, intensity.year, intensity.source,
                         grams(per_k.joules), grams(per_k.low_j), grams(per_k.high_j)),
    }
    phases = {p.name: p for p in results.phases}

    def per_step(name: str) -> Energy | None:
        p = phases.get(name)
        return None if p is None else results.scaled_split(p.energy, 1 / p.count)

    if "prefill" in phases or "decode" in phases:
        # each prefill yields the first token of its sequence, each decode step one more
        out["per_prefill"], out["per_decode_step"] = per_step("prefill"), per_step("decode")
        out["tokens"] = tokens = results.generated_tokens
        out["per_token"] = total.scaled(1 / tokens)
    if "denoise" in phases:
        out["per_denoising_step"] = per_step("denoise")
        out["per_image"] = total.scaled(1 / (n * (results.batch_size or 1)))
    if training_kwh is not None:
        out["training_kwh"] = training_kwh
        out["parity_inferences"] = carbon.inferences_to_parity(training_kwh, per_inf.joules, pue)
    return Rollups(**out)
