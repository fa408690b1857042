from deployhook.cli import main

main()
