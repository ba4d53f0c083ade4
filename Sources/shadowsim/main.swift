import ShadowSimCLI

ShadowSimCommand.main()
