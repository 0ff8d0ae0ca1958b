"""What the launcher hands the box before the agent or the trainer starts: the run's store.json
(where the agent mirrors to, the budget, the instance to release) and the secrets file
(mode 600; its path: launcher/secrets.py), and the shell prefix that sources it."""
from __future__ import annotations

from launcher.run.context import RunContext
from runcontract.run_folder import STORE_CONFIG_FILE


def secrets_prefix(ctx: RunContext) -> str:
    # the secrets reach the processes' environment from a mode-600 file, never their argv
    path = ctx.secrets_path
    return f"set -a; [ -f {path} ] && . {path}; set +a;"


def write_store_config(ctx: RunContext) -> None:
    from launcher.agent import store_config_json

    config = ctx.config.model_copy(update={"budget": ctx.budget})
    ctx.box.put_text(f"{ctx.run_dir}/{STORE_CONFIG_FILE}", store_config_json(config, ctx.run_name, ctx.instance_id, ctx.fence_generation))


def write_secrets(ctx: RunContext) -> int:
    """Write the box's secrets file (mode 600); returns how many variables (never their values).
    With none to hand over, no file is written (and a stale one is removed)."""
    from launcher.secrets import box_secret_env, render_env_file

    env = box_secret_env(ctx.config, train_config=ctx.train_config())
    if not env:
        ctx.box.run(f"rm -f {ctx.secrets_path}", check=False, timeout=30, cwd=ctx.box.kind == "local")
        return 0
    ctx.box.put_text(ctx.secrets_path, render_env_file(env), mode=0o600)
    return len(env)
