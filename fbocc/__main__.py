from fbocc.cli import main

main()
