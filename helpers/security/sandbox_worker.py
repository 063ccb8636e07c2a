"""Child process of ``isolation.run_isolated``: limit itself, then load and run the model.

Usage: ``python -I -m helpers.security.sandbox_worker MODEL INPUTS OUTPUTS MEMORY_MB CPU_S``.
Prints ``ready`` once torch is imported and the limits are set. Exit codes:
0 with OUTPUTS written, 2 for an error, 3 when the memory limit was hit.
"""

from __future__ import annotations

import resource
import sys


def _address_space_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmSize not found in /proc/self/status")


def main(argv: list[str]) -> int:
    model_path, input_path, output_path, memory_mb, cpu_s = argv
    import torch
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(1)
    inputs = load_file(input_path)["inputs"]
    limit = _address_space_bytes() + int(memory_mb) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_s), int(cpu_s)))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    print("ready", flush=True)
    try:
        model = torch.load(model_path, map_location="cpu", weights_only=False)
        if not isinstance(model, torch.nn.Module):
            print(f"the file contains a {type(model).__name__}, not an nn.Module", file=sys.stderr)
            return 2
        with torch.no_grad():
            outputs = model.eval()(inputs)
        save_file({"outputs": outputs.detach().contiguous()}, output_path)
    except MemoryError as error:
        print(f"MemoryError: {error}", file=sys.stderr)
        return 3
    except RuntimeError as error:
        message = str(error)
        print(message[-300:], file=sys.stderr)
        return 3 if "memory" in message.lower() else 2
    except Exception as error:  # the model's code may raise anything
        print(f"{type(error).__name__}: {error}"[-300:], file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
