"""torch.hub entry points for SaShiMi.

From a clone, ``torch.hub.load(".", name, source="local")``; from GitHub, ``"<owner>/sashimi"``
below, ``<owner>`` being the account that hosts the repository.

    model = torch.hub.load("<owner>/sashimi", "sashimi_ar_fsdd")   # bundled, offline: 1 s at 8 kHz
    wav = model.unconditional_generate(4)                    # (4, 8000)

    model = torch.hub.load("<owner>/sashimi", "sashimi_ar_sc09")
    wav = model.unconditional_generate(4, nucleus_p=1.0)   # (4, 16000), 1 s at 16 kHz

    model = torch.hub.load("<owner>/sashimi", "sashimi_ar_youtubemix")   # the authors' piano model (16 kHz)
    wav = model.unconditional_generate(1, length=16000 * 16)             # 16 s of piano

    model = torch.hub.load("<owner>/sashimi", "sashimi_ar_sc09", variant="paper")  # the authors' SC09 file

    model = torch.hub.load("<owner>/sashimi", "sashimi_diffwave_sc09")
    wav = model.unconditional_generate(4, steps="fast")    # 6 denoising steps; steps=None: all 200

    model = torch.hub.load("<owner>/sashimi", "sashimi_ar_sc09", checkpoint="hf://owner/name")  # a model on the Hub
"""
dependencies = ["torch", "yaml", "tqdm", "safetensors"]  # checkpoint="hf://..." also needs huggingface_hub

from sashimi.pretrained import (sashimi_ar_fsdd, sashimi_ar_sc09, sashimi_ar_youtubemix,  # noqa: E402,F401
                                sashimi_diffwave_sc09)
