include: "inputs/plots.smk"


rule plate_overview:
    input:
        cell_counts=output_of("quality", "cell_counts"),
        annotated=output_of("profiles", "annotated"),
    output:
        overview=report(
            "results/figures/{seg}/{plate}/overview.png",
            caption="../report/plate_overview.rst",
            category="Plates",
            subcategory="{plate}",
            labels={"plate": "{plate}", "version": "{seg}", "figure": "overview"},
        ),
    log:
        "logs/figures/{seg}/{plate}_overview.log",
    params:
        readout=READOUT,
        plate_format=config["report"]["plate_format"],
        code=code_of("plate_overview.py"),
    threads: 1
    conda:
        "../envs/profiles.yaml"
    script:
        "../scripts/plate_overview.py"


rule image_figures:
    input:
        unpack(illumination_functions),
        image_qc=output_of("qc"),
    output:
        illumination=report(
            "results/figures/{plate}/illumination.png",
            caption="../report/illumination.rst",
            category="Plates",
            subcategory="{plate}",
            labels={"plate": "{plate}", "version": "all", "figure": "illumination"},
        ),
        qc=report(
            "results/figures/{plate}/image_qc.png",
            caption="../report/qc_distributions.rst",
            category="Plates",
            subcategory="{plate}",
            labels={"plate": "{plate}", "version": "all", "figure": "image QC"},
        ),
    log:
        "logs/figures/{plate}_images.log",
    params:
        channels=CHANNELS,
        code=code_of("image_figures.py"),
    threads: 1
    conda:
        "../envs/profiles.yaml"
    script:
        "../scripts/image_figures.py"


rule overlays:
    input:
        masks=overlay_mask_batches,
        images=overlay_images,
    output:
        overlays=report(
            "results/figures/{seg}/{plate}/overlays.png",
            caption="../report/overlays.rst",
            category="Plates",
            subcategory="{plate}",
            labels={"plate": "{plate}", "version": "{seg}", "figure": "segmentation"},
        ),
    log:
        "logs/figures/{seg}/{plate}_overlays.log",
    params:
        sample_sites=overlay_sites,
        code=code_of("overlays.py"),
    threads: 1
    conda:
        "../envs/profiles.yaml"
    script:
        "../scripts/overlays.py"


rule experiment_figures:
    input:
        profiles=output_of("experiment", "feature_selected"),
        map=output_of("quality", "map"),
        zprime=output_of("quality", "zprime"),
        annotated=version_annotated,
    output:
        pca=report(
            "results/figures/{seg}/pca.png",
            caption="../report/pca.rst",
            category="Experiment",
            subcategory="{seg}",
            labels={"version": "{seg}", "figure": "PCA"},
        ),
        map=report(
            "results/figures/{seg}/map.png",
            caption="../report/map.rst",
            category="Experiment",
            subcategory="{seg}",
            labels={"version": "{seg}", "figure": "mAP"},
        ),
        dose_response=report(
            "results/figures/{seg}/dose_response.png",
            caption="../report/dose_response.rst",
            category="Experiment",
            subcategory="{seg}",
            labels={"version": "{seg}", "figure": "dose response"},
        ),
    log:
        "logs/figures/{seg}/experiment.log",
    params:
        color_by=pca_colour,
        dose_column=config["report"]["dose_column"],
        readout=READOUT,
        code=code_of("experiment_figures.py"),
    threads: 1
    conda:
        "../envs/profiles.yaml"
    script:
        "../scripts/experiment_figures.py"
