"""Publishing a trained output folder: model (with its encoder), tokenizer, code files and model card."""

from huggingface_hub import HfApi

# Trainer leftovers that do not belong in a model repository (training_args.bin is a pickle)
PUSH_IGNORE = ["checkpoint-*", "checkpoint-*/**", "runs/**", "*.bin", "bpe_tokenizer/**", ".*"]


def push_folder(folder, repo_id: str, token: str | None = None, private: bool | None = None,
                commit_message: str = "Upload fusion LSTM language model"):
    """Creates `repo_id` if needed and uploads `folder` as one commit; returns the CommitInfo."""
    api = HfApi(token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo.repo_id, folder_path=str(folder), commit_message=commit_message,
                             ignore_patterns=PUSH_IGNORE)
