-- wrk script: every request carries the header IMDS requires (`Metadata: true`); harmless for nginx/moto.
wrk.headers["Metadata"] = "true"
