from ipvae.cli import main

raise SystemExit(main())
