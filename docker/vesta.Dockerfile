# The vesta image: built by scripts/docker-build.sh from a root filesystem it assembles (the release
# binary, its shared libraries and loader, sh and sleep) — nothing is pulled from a registry.
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/bin VESTA_LOG=info
WORKDIR /data
CMD ["vesta", "--help"]
