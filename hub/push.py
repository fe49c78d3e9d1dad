"""Publishing a trained output folder: model (with its encoder), tokenizer, code files and model card."""

from huggingface_hub import HfApi

# Trainer leftovers that do not belong in a model repository (training_args.bin is a pickle)
PUSH_IGNORE = ["checkpoint-*", "checkpoint-*/**", "runs/**", "*.bin", "bpe_tokenizer/**", ".*"]


def check_push(repo_id: str, token: str | None = None):
    """Before any training: `repo_id` must be a repository id and the Hub must accept the token (when there is one:
    without, the push itself decides). Refuses naming the problem."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"--push_to_hub: {repo_id!r} is not a repository id ({error}); set --hub_model_id "
                         "owner/name.") from None
    token = token or get_token()
    if not token:
        return
    api = HfApi(token=token)
    try:
        api.whoami()
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        raise ValueError(f"--push_to_hub: the Hub at {api.endpoint} refuses the token (HTTP {status}); set a valid "
                         "--hub_token or HF_TOKEN, or log in with `hf auth login`.") from None
    except Exception as error:  # noqa: BLE001 - the Hub cannot be reached: the push at the end would fail too
        raise ValueError(f"--push_to_hub: the Hub at {api.endpoint} cannot be reached ({error}); push later with "
                         "hub/push.py's push_folder, or train without --push_to_hub.") from None


def push_folder(folder, repo_id: str, token: str | None = None, private: bool | None = None,
                commit_message: str = "Upload fusion LSTM language model"):
    """Creates `repo_id` if needed and uploads `folder` as one commit; returns the CommitInfo."""
    api = HfApi(token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo.repo_id, folder_path=str(folder), commit_message=commit_message,
                             ignore_patterns=PUSH_IGNORE)
