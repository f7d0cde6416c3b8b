"""The sharded, resumable stages over models: prompts, generate, score, rewards, the corpus contract, content
digests, resume checks, executors."""
