# The Prometheus image: built by scripts/docker-build.sh from the host's prometheus (Debian package
# prometheus), the shared libraries it needs and docker/prometheus.yml — nothing is pulled from a registry.
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin
EXPOSE 9090
CMD ["prometheus", "--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.listen-address=0.0.0.0:9090"]
